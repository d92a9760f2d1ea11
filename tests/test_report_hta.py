"""The report's HTA view (--hta) read by Holistic Trace Analysis itself: temporal
breakdown, idle time and comm/comp overlap on a 2-rank run whose rank 1 computes twice
as long. (HTA's straggler detection does not work on these traces: README, Seeing
where time goes.)"""
import json

import pytest

from launch import mpi_env, run_mpi
from test_report import report, require


@pytest.fixture(scope="module")
def hta_dir(tmp_path_factory):
    require("hta")
    path = tmp_path_factory.mktemp("run") / "trace"
    proc = run_mpi(2, "-m", "mpicnn.train", "--no-progress", "--steps", "24", "--eval-every", "1000", "--trace",
                   str(path), env=mpi_env(MPICNN_SLOW_RANK="1:2.0"))
    assert proc.returncode == 0, proc.stderr
    proc = report(str(path), "--json", "--no-plots", "--hta")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["hta_traces"]


@pytest.fixture(scope="module")
def analysis(hta_dir):
    from hta.trace_analysis import TraceAnalysis
    return TraceAnalysis(trace_dir=hta_dir)


def test_hta_temporal_breakdown(analysis):
    df = analysis.get_temporal_breakdown(visualize=False)
    assert sorted(df["rank"]) == [0, 1]
    by_rank = df.set_index("rank")
    assert (by_rank["compute_time(us)"] > 0).all()
    # The straggler computes most of its step; rank 0 spends its own mostly waiting in the allreduce.
    assert by_rank.loc[1, "compute_time_pctg"] > by_rank.loc[0, "compute_time_pctg"]


def test_hta_idle_time_and_overlap(analysis):
    idle = analysis.get_idle_time_breakdown(ranks=[0, 1], visualize=False)[0]
    assert sorted(set(idle["rank"])) == [0, 1] and (idle["idle_time"] >= 0).all()
    overlap = analysis.get_comm_comp_overlap(visualize=False)
    assert sorted(overlap["rank"]) == [0, 1] and overlap["comp_comm_overlap_pctg"].notna().all()
