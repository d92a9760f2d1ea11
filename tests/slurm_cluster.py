"""A throwaway one-node Slurm cluster on localhost, for tests of the job scripts.

munged, slurmctld and slurmd run in the foreground as children of this process, from a private
directory with their own key, config, state, spool, logs and free loopback ports; nothing in
/etc or /run is used and no systemd is needed. Clients find the cluster through SLURM_CONF
(``cluster.env``). Needs root and the Debian packages slurmctld, slurmd, slurm-client, munge::

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wait", ...], env=cluster.env)
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "scontrol")
NODE = "localhost"


def unavailable():
    """Why no cluster can be started here (a skip reason), or None."""
    missing = [p for p in PROGRAMS if not _sbin(p)]
    if missing:
        return (f"Slurm not installed (no {', '.join(missing)}); "
                "apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "the test Slurm cluster needs root (slurmd starts jobs as their user)"
    return None


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_hardware():
    """The CPU and memory part of ``slurmd -C`` (what slurmd will report, so the node is not drained)."""
    out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    words = [w for w in out.split() if w.split("=")[0] in keys]
    return " ".join(words) or f"CPUs={os.cpu_count()}"


def _sbin(name):
    """A program's path; the daemons live in /usr/sbin, which a user's PATH may lack."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


class SlurmCluster:
    def __init__(self):
        self.dir = None
        self.procs = {}

    # -- life cycle -----------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=60):
        # munged wants every directory above its socket searchable by all (pytest's
        # /tmp/pytest-of-root is 0700) and the key readable by its owner only.
        self.dir = tempfile.mkdtemp(prefix="mpicnn-slurm-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        d = self.dir
        for sub in ("state", "spool", "log"):
            os.mkdir(os.path.join(d, sub))
        key = os.path.join(d, "munge.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(1024))
        os.close(fd)
        self.socket = os.path.join(d, "munge.socket")
        self.conf = os.path.join(d, "slurm.conf")
        ctld_port, slurmd_port = _free_ports(2)
        with open(self.conf, "w") as f:
            f.write(f"""\
ClusterName=mpicnntest
SlurmctldHost={NODE}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName={NODE} NodeAddr=127.0.0.1 {_node_hardware()} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self._spawn("munged", [_sbin("munged"), "--foreground", f"--socket={self.socket}", f"--key-file={key}",
                               f"--pid-file={d}/munged.pid", f"--log-file={d}/log/munged.log",
                               f"--seed-file={d}/munged.seed"])
        self._wait(lambda: os.path.exists(self.socket), 10, "munged to create its socket")
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-c"])
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", NODE])
        self._wait(lambda: self.node_state() == "idle", timeout, f"the node {NODE!r} to be idle in sinfo")

    def stop(self):
        """Cancel the jobs, stop the daemons, kill whatever the jobs left; never raises."""
        if "slurmctld" in self.procs:
            try:
                active = self.jobs("PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING")
                if active:
                    self.run("scancel", *active)
                    self._wait(lambda: not self.jobs("PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING"),
                               15, "the jobs to end", fail=False)
            except Exception:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._kill_leftovers()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- clients --------------------------------------------------------------------------
    def run(self, *args, timeout=60, **kw):
        return subprocess.run(args, env=kw.pop("env", self.env), capture_output=True, text=True,
                              timeout=timeout, **kw)

    def node_state(self):
        proc = self.run("sinfo", "--noheader", "--nodes", NODE, "--format=%T", timeout=15)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def jobs(self, states):
        proc = self.run("squeue", "--noheader", "--format=%i", f"--states={states}", timeout=15)
        return proc.stdout.split()

    def job_info(self, jobid):
        """`scontrol show job` as a dict (JobState, ExitCode, ...)."""
        out = self.run("scontrol", "--oneliner", "show", "job", str(jobid)).stdout
        return dict(w.split("=", 1) for w in out.split() if "=" in w)

    def logs(self, lines=40):
        """The end of every daemon log, for failure messages."""
        text = []
        for name in sorted(os.listdir(os.path.join(self.dir, "log"))) if self.dir else []:
            with open(os.path.join(self.dir, "log", name), errors="replace") as f:
                text.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(text)

    # -- helpers --------------------------------------------------------------------------
    def _spawn(self, name, argv):
        out = open(os.path.join(self.dir, "log", f"{name}.out"), "w")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def _wait(self, ready, timeout, what, fail=True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead and fail:
                raise RuntimeError(f"test Slurm cluster: {', '.join(dead)} exited while waiting for "
                                   f"{what}\n{self.logs()}")
            time.sleep(0.2)
        if fail:
            raise RuntimeError(f"test Slurm cluster: timed out after {timeout} s waiting for {what}\n"
                               f"{self.logs()}")
        return False

    def _kill_leftovers(self):
        """Kill processes that still carry this cluster's SLURM_CONF (job steps, slurmstepd)."""
        if not self.dir:
            return
        mark = f"SLURM_CONF={self.conf}".encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
