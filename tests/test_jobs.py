"""The batch scripts in jobs/: every scheduler's script run with stub launchers (argv, environment,
auto-resume, signal forwarding), and the Slurm script submitted to a real one-node Slurm."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from launch import ROOT
from slurm_cluster import SlurmCluster, unavailable
from tools import require

JOBS = os.path.join(ROOT, "jobs")
SCRIPTS = ["slurm.sbatch", "pbs.sh", "lsf.sh", "flux.sh", "common.sh"]

# A stand-in for mpirun, srun and flux: records its argv (NUL-separated) and environment,
# answers flux's `resource list`, `submit` and `job kill`, and with STUB_SLEEP waits (up to
# 10 s) until a signal arrives, which it records.
STUB = r"""#!/bin/bash
name=$(basename "$0")
case "$name ${1:-} ${2:-}" in
    "flux resource list") echo "${STUB_CORES:-3} ${STUB_GPUS:-0}"; echo "1 ${STUB_GPUS:-0}"; exit 0 ;;
    "flux submit "*) printf '%s\0' "$@" > "$STUB_DIR/$name.argv"; echo fSTUB; exit 0 ;;
    "flux job kill") echo "$3 $4" >> "$STUB_DIR/signals"; exit 0 ;;
    "flux job attach") ;;
    *) printf '%s\0' "$@" > "$STUB_DIR/$name.argv" ;;
esac
env -0 > "$STUB_DIR/$name.env"
trap 'echo USR1 >> "$STUB_DIR/signals"' USR1
trap 'echo TERM >> "$STUB_DIR/signals"' TERM
if [ -n "${STUB_SLEEP:-}" ]; then
    touch "$STUB_DIR/ready"
    for _ in $(seq 100); do [ -e "$STUB_DIR/signals" ] && exit 0; sleep 0.1; done
fi
exit "${STUB_EXIT:-0}"
"""

TRAINER = ["env", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1", "PYTHONUNBUFFERED=1",
           "/opt/py/bin/python", "-m", "mpicnn.train"]


class Stubbed:
    """Runs a job script with stub launchers first on PATH and a scheduler's environment."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "stub"
        self.bin = tmp_path / "bin"
        self.work = tmp_path / "work"
        for d in (self.dir, self.bin, self.work):
            d.mkdir()
        for name in ("mpirun", "srun", "flux"):
            (self.bin / name).write_text(STUB)
            (self.bin / name).chmod(0o755)
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("MPICNN_", "SLURM_", "PBS_", "LSB_", "LS_", "FLUX_"))}
        self.env = dict(clean, PATH=f"{self.bin}:{os.environ['PATH']}", STUB_DIR=str(self.dir),
                        MPICNN_PYTHON="/opt/py/bin/python", OMP_NUM_THREADS="8")

    def start(self, script, *args, env=None, path=None):
        return subprocess.Popen(["bash", path or os.path.join(JOBS, script), *args], cwd=self.work,
                                env=dict(self.env, **(env or {})), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, script, *args, env=None, path=None):
        proc = self.start(script, *args, env=env, path=path)
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def argv(self, name):
        return (self.dir / f"{name}.argv").read_bytes().decode().split("\0")[:-1]

    def environ(self, name):
        items = (self.dir / f"{name}.env").read_bytes().decode().split("\0")
        return dict(kv.split("=", 1) for kv in items if "=" in kv)

    def signals(self):
        path = self.dir / "signals"
        return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.fixture
def stub(tmp_path):
    return Stubbed(tmp_path)


def scheduler_env(kind, tmp_path):
    """What each scheduler sets in a job: 3 ranks and a job name."""
    if kind == "slurm":
        return {"SLURM_NTASKS": "3", "SLURM_JOB_NAME": "myrun", "SLURM_SUBMIT_DIR": ROOT}
    if kind == "pbs":
        nodes = tmp_path / "nodefile"
        nodes.write_text("n1\nn1\nn2\n")
        return {"PBS_NODEFILE": str(nodes), "PBS_O_WORKDIR": str(tmp_path / "work"), "PBS_JOBNAME": "myrun"}
    if kind == "lsf":
        hosts = tmp_path / "hostfile"
        hosts.write_text("n1\nn1\nn2\n")
        return {"LSB_DJOB_NUMPROC": "3", "LSB_DJOB_HOSTFILE": str(hosts), "LS_SUBCWD": str(tmp_path / "work"),
                "LSB_JOBNAME": "myrun"}
    return {"STUB_CORES": "2", "MPICNN_JOB_NAME": "myrun", "FLUX_JOB_ID": "f123"}  # 2 + 1 cores


def expected_launch(kind, tmp_path):
    """(recording stub, its argv up to the trainer command)."""
    if kind == "slurm":
        return "mpirun", ["-n", "3"]
    if kind == "pbs":
        return "mpirun", ["-n", "3", "-hostfile", str(tmp_path / "nodefile")]
    if kind == "lsf":
        return "mpirun", ["-n", "3", "-hostfile", str(tmp_path / "hostfile")]
    return "flux", ["submit", "--job-name=mpicnn", "-n", "3", "--signal=USR1@120"]


KINDS = {"slurm": "slurm.sbatch", "pbs": "pbs.sh", "lsf": "lsf.sh", "flux": "flux.sh"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", os.path.join(JOBS, script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck_is_clean():
    require(shutil.which("shellcheck"), "shellcheck not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "--shell=bash", "--external-sources", "--source-path=SCRIPTDIR",
                           *[os.path.join(JOBS, s) for s in SCRIPTS]], capture_output=True, text=True, cwd=JOBS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_launch_line_threads_resume_and_passthrough(stub, tmp_path, kind):
    proc = stub.run(KINDS[kind], "--steps", "5", "--lr", "0.1", env=scheduler_env(kind, tmp_path))
    assert proc.returncode == 0, proc.stderr
    name, launch = expected_launch(kind, tmp_path)
    assert stub.argv(name) == launch + TRAINER + ["--checkpoint-dir", "runs/myrun", "--resume",
                                                  "--steps", "5", "--lr", "0.1"]
    env = stub.environ(name)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert "mpicnn.train" in proc.stderr  # the launch line is logged


@pytest.mark.parametrize("kind", KINDS)
def test_settings_from_the_environment(stub, tmp_path, kind):
    settings = {"MPICNN_NP": "5", "MPICNN_THREADS": "2", "MPICNN_CHECKPOINT_DIR": "/scratch/ck",
                "MPICNN_ARGS": "--model convnet  --epochs 3", "MPICNN_LAUNCHER_ARGS": "--bind-to core"}
    proc = stub.run(KINDS[kind], "--epochs", "4", env={**scheduler_env(kind, tmp_path), **settings})
    assert proc.returncode == 0, proc.stderr
    name, launch = expected_launch(kind, tmp_path)
    argv = stub.argv(name)
    assert argv[argv.index("-n") + 1] == "5"
    trainer = argv[argv.index("env"):]
    assert argv[argv.index("env") - 2:argv.index("env")] == ["--bind-to", "core"]
    assert trainer[1:4] == ["OMP_NUM_THREADS=2", "OPENBLAS_NUM_THREADS=2", "MKL_NUM_THREADS=2"]
    assert trainer[-9:] == ["--checkpoint-dir", "/scratch/ck", "--resume", "--model", "convnet",
                            "--epochs", "3", "--epochs", "4"]  # argparse: the last --epochs wins


@pytest.mark.parametrize("kind", KINDS)
def test_auto_resume_off(stub, tmp_path, kind):
    proc = stub.run(KINDS[kind], "--steps", "5", env={**scheduler_env(kind, tmp_path), "MPICNN_AUTO_RESUME": "0"})
    assert proc.returncode == 0, proc.stderr
    argv = stub.argv(expected_launch(kind, tmp_path)[0])
    assert argv[-3:] == ["mpicnn.train", "--steps", "5"] and "--resume" not in argv


def test_job_name_is_a_safe_directory(stub, tmp_path):
    env = {**scheduler_env("lsf", tmp_path), "LSB_JOBNAME": "jobs/lsf.sh --epochs 5"}
    assert stub.run("lsf.sh", env=env).returncode == 0
    argv = stub.argv("mpirun")
    assert argv[argv.index("--checkpoint-dir") + 1] == "runs/jobs_lsf.sh_--epochs_5"


def test_flux_one_rank_per_gpu(stub, tmp_path):
    proc = stub.run("flux.sh", env={**scheduler_env("flux", tmp_path), "STUB_GPUS": "2"})  # 2 + 2 GPUs
    assert proc.returncode == 0, proc.stderr
    assert stub.argv("flux")[:6] == ["submit", "--job-name=mpicnn", "-n", "4", "-g", "1"]


def test_slurm_srun_launcher(stub, tmp_path):
    proc = stub.run("slurm.sbatch", "--steps", "5", env={**scheduler_env("slurm", tmp_path), "MPICNN_LAUNCHER": "srun"})
    assert proc.returncode == 0, proc.stderr
    assert stub.argv("srun") == ["--kill-on-bad-exit=1"] + TRAINER + [
        "--checkpoint-dir", "runs/myrun", "--resume", "--steps", "5"]


def test_slurm_finds_common_sh_from_the_spool_copy(stub, tmp_path):
    """slurmd runs a copy of the script from its spool directory: common.sh comes from
    $SLURM_SUBMIT_DIR/jobs; without it the script says what to do."""
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(os.path.join(JOBS, "slurm.sbatch"), spool / "slurm_script")
    proc = stub.run("slurm.sbatch", path=str(spool / "slurm_script"), env=scheduler_env("slurm", tmp_path))
    assert proc.returncode == 0, proc.stderr
    env = dict(scheduler_env("slurm", tmp_path), SLURM_SUBMIT_DIR=str(tmp_path))
    proc = stub.run("slurm.sbatch", path=str(spool / "slurm_script"), env=env)
    assert proc.returncode == 1 and "MPICNN_JOBS_DIR" in proc.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_exit_status_of_the_launcher(stub, tmp_path, kind):
    proc = stub.run(KINDS[kind], env={**scheduler_env(kind, tmp_path), "STUB_EXIT": "3"})
    assert proc.returncode == 3


@pytest.mark.parametrize("kind, sent", [(k, s) for k in KINDS for s in ("USR1", "TERM")])
def test_signals_to_the_script_reach_the_launcher_as_usr1(stub, tmp_path, kind, sent):
    """A time-limit warning (USR1) or TERM sent to the batch script only: the launcher gets USR1,
    the script waits for it and returns its status."""
    proc = stub.start(KINDS[kind], env={**scheduler_env(kind, tmp_path), "STUB_SLEEP": "1"})
    deadline = time.monotonic() + 10
    while not (stub.dir / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(getattr(signal, "SIG" + sent))
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and time.monotonic() - t0 < 5, err
    assert stub.signals() == (["--signal=USR1 fSTUB"] if kind == "flux" else ["USR1"])
    assert f"got SIG{sent}, sending SIGUSR1" in err


# -- a real Slurm --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm():
    reason = unavailable()
    require(reason is None, reason)
    with SlurmCluster() as cluster:
        yield cluster


def sbatch(cluster, work, *args, wait=True, timeout=120):
    """Submit jobs/slurm.sbatch from the checkout (as users do) to run in `work`."""
    clean = {k: v for k, v in cluster.env.items()
             if not k.startswith(("MPICNN_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_", "I_MPI_"))}
    env = dict(clean, SLURM_CONF=cluster.conf, MPICNN_PYTHON=sys.executable,
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    opts = ["--parsable", "--chdir", str(work), "--output", str(work / "slurm-%j.out")]
    if wait:
        opts.append("--wait")
    proc = cluster.run("sbatch", *opts, *args, env=env, cwd=ROOT, timeout=timeout)
    jobid = proc.stdout.strip().split(";")[0]
    output = (work / f"slurm-{jobid}.out").read_text() if wait and jobid else ""
    return proc, jobid, output


def explain(cluster, proc, output):
    return f"sbatch: {proc.stderr}\njob output:\n{output}\n{cluster.logs()}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slurm_job_trains_and_a_resubmission_continues(slurm, tmp_path):
    proc, jobid, output = sbatch(slurm, tmp_path, "-n", "2", "jobs/slurm.sbatch", "--steps", "20", "--no-progress")
    assert proc.returncode == 0, explain(slurm, proc, output)
    assert re.search(r"test accuracy \d+\.\d\d%", output), output
    assert "OMP_NUM_THREADS=1" in output and "mpirun -n 2" in output
    assert (tmp_path / "runs" / "mpicnn" / "ckpt-00000020.h5").exists()

    proc, _, output = sbatch(slurm, tmp_path, "-n", "2", "jobs/slurm.sbatch", "--steps", "30", "--no-progress")
    assert proc.returncode == 0, explain(slurm, proc, output)
    assert re.search(r"resumed from \S*runs/mpicnn/ckpt-00000020\.h5 at step 20", output), output
    assert re.search(r"test accuracy \d+\.\d\d%", output), output
    assert (tmp_path / "runs" / "mpicnn" / "ckpt-00000030.h5").exists()


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "PREEMPTED")


def start_long_job(cluster, work):
    """Submit a run far longer than the test and return its id once it is training."""
    metrics = work / "m.jsonl"
    proc, jobid, _ = sbatch(cluster, work, "-n", "2", "jobs/slurm.sbatch", "--steps", "100000",
                            "--no-progress", "--log-every", "1", "--metrics", str(metrics), wait=False)
    assert proc.returncode == 0 and jobid, explain(cluster, proc, "")
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        state = cluster.job_info(jobid).get("JobState")
        out = work / f"slurm-{jobid}.out"
        assert time.monotonic() < deadline and state not in ENDED, \
            f"job {jobid} {state}\n" + explain(cluster, proc, out.read_text() if out.exists() else "")
        time.sleep(0.2)
    return jobid


def wait_for_the_end(cluster, work, jobid, seconds):
    """Wait until the job has ended; return (scontrol fields, job output, checkpoint step)."""
    t0 = time.monotonic()
    while cluster.job_info(jobid).get("JobState") not in ENDED:
        assert time.monotonic() - t0 < seconds, f"job {jobid} still running after {seconds} s"
        time.sleep(0.2)
    info, output = cluster.job_info(jobid), (work / f"slurm-{jobid}.out").read_text()
    stopped = re.search(r"stopped by SIG\w+ after step (\d+)", output)
    assert stopped, (info, output)
    step = int(stopped.group(1))
    assert (work / "runs" / "mpicnn" / f"ckpt-{step:08d}.h5").exists(), output
    return info, output, step


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slurm_usr1_to_the_script_checkpoints_and_the_next_job_resumes(slurm, tmp_path):
    """scancel --batch --signal=USR1: the signal --signal=B:USR1@120 sends, by hand."""
    jobid = start_long_job(slurm, tmp_path)
    signalled = slurm.run("scancel", "--batch", "--signal=USR1", jobid)
    assert signalled.returncode == 0, signalled.stderr
    info, output, step = wait_for_the_end(slurm, tmp_path, jobid, 30)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, output)
    assert "got SIGUSR1, sending SIGUSR1 to the launcher" in output and "stopped by SIGUSR1" in output

    proc, _, output = sbatch(slurm, tmp_path, "-n", "2", "jobs/slurm.sbatch", "--steps", str(step + 3),
                             "--no-progress")
    assert proc.returncode == 0, explain(slurm, proc, output)
    assert f"at step {step}" in output and re.search(r"test accuracy \d+\.\d\d%", output), output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slurm_time_limit_warning_checkpoints(slurm, tmp_path):
    """The script's #SBATCH --signal=B:USR1@120 for real: a time limit of one minute puts the
    job inside the warning window at once; slurmctld sends USR1 on its next pass (<= 30 s)."""
    jobid = start_long_job(slurm, tmp_path)
    update = slurm.run("scontrol", "update", f"JobId={jobid}", "TimeLimit=1")
    assert update.returncode == 0, update.stderr
    info, output, _ = wait_for_the_end(slurm, tmp_path, jobid, 60)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, output)
    assert "got SIGUSR1" in output and "stopped by SIGUSR1" in output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slurm_scancel_checkpoints(slurm, tmp_path):
    """Plain scancel (and the time limit itself): TERM to every process of the job."""
    jobid = start_long_job(slurm, tmp_path)
    cancelled = slurm.run("scancel", jobid)
    assert cancelled.returncode == 0, cancelled.stderr
    info, output, _ = wait_for_the_end(slurm, tmp_path, jobid, 30)
    assert info["JobState"] == "CANCELLED", (info, output)
