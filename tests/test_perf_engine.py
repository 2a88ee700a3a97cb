"""The performance model (golden/perf/engine.py) against the RTL: every job of the
`make bench-dram` report (reports/bench-b128/report.json: MovieLens window 0 and the
Meta-calibrated trace, B = 128, R = 1, 2, 4, the three modes, both jobs) and of
reports/bench-b1024 (MovieLens B = 1,024, R = 1: parts, chunks and dry passes the B = 128
runs do not have) and the backward jobs of reports/bench-adagrad (row-wise Adagrad, both
traces at B = 128, R = 1, 2, 4) within the stated tolerance of the RTL's cycles, never
below the job's own bounds; and the sampled estimate of a batch too large to run whole
close to the whole run.

After a change of the engine, `make bench-dram`, `refree bench --traces movielens
--batch-size 1024 --ranks 1 --out reports/bench-b1024` and the command in
reports/bench-adagrad/report.md rewrite the reports this test reads."""
import json
from pathlib import Path

import numpy as np
import pytest

from refree.gen.config import load_config
from refree.golden.perf.__main__ import calibration
from refree.gen.runs import trace_options
from refree.golden.perf.engine import fold_alone_cycles, job_cycles
from refree.golden.planner import partition, plan_part
from refree.golden.traces import make_trace
from refree.hw.ddr4.params import DramParams
from refree.hw.engine.params import EngineParams
from refree.verif.engine_run import limits_of
from refree.verif.fold_harness import fold_cycles
from refree.verif.staging import layout

REPORTS = [Path(__file__).resolve().parents[1] / "reports" / name / "report.json"
           for name in ("bench-b128", "bench-b1024", "bench-adagrad")]
# Issue 17's goal: every job within 5 % (the largest measured: MovieLens R = 4, `baseline`
# backward, -4.1 %; mean 1.3 % over the 54 jobs).
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def records():
    return [r for path in REPORTS for r in json.loads(path.read_text())["records"]]


@pytest.fixture(scope="module")
def rows(records):
    return calibration(records, limits_of(load_config(None).params))


def test_every_job_within_the_tolerance(rows):
    assert len(rows) == 54
    worst = max(rows, key=lambda x: abs(x["model"] / x["rtl"] - 1))
    assert abs(worst["model"] / worst["rtl"] - 1) <= TOLERANCE, worst
    mean = sum(abs(x["model"] / x["rtl"] - 1) for x in rows) / len(rows)
    assert mean <= 0.025, mean


def test_never_below_the_bounds(rows, records):
    """The model moves the job's beats through DRAM at no more than the ranks' peak and
    analyses a lookup a cycle at most: it is never faster than the memory and analysis
    bounds (the rooflines of docs/design.md section 3)."""
    bounds = {(r["trace"], r["batch_size"], r["ranks"], r.get("optimizer", "sgd"), mode, job):
              r["modes"][mode][job]["bounds"]
              for r in records if r["kind"] == "rtl" for mode in r["modes"] for job in ("forward", "backward")}
    for x in rows:
        b = bounds[x["trace"], x["batch_size"], x["ranks"], x["optimizer"], x["mode"], x["job"]]
        assert x["model"] >= max(b["memory"], b["analysis"]), x


def test_sampled_estimate_near_the_whole_run():
    """A job of many parts: running every third part (each on a fresh DRAM side) and scaling
    by the lookups walked lands within 10 % of running them all."""
    trace = make_trace("meta", 1024, 1, seed=3)
    limits = limits_of(load_config(None).params)
    limits = type(limits)(limits.max_bags, limits.max_lookups, limits.max_distinct_rows, 128)
    params = DramParams(ranks=2)
    lay = layout(trace.batch, [np.zeros((n, 64), np.float32) for n in trace.num_rows],
                 stripe=params.mapping.staging_stripe)
    for mode in ("baseline", "dedup"):
        whole, _, sampled, _ = job_cycles(trace.batch, lay, mode, "forward", limits, params)
        assert not sampled
        total = len(trace.batch.indices)
        estimate, _, sampled, _ = job_cycles(trace.batch, lay, mode, "forward", limits, params,
                                          max_lookups=total // 3)
        assert sampled and abs(estimate / whole - 1) <= 0.10, (mode, whole, estimate)


def test_a_report_that_cannot_be_read_is_a_clear_error(tmp_path, capsys):
    from refree.golden.perf.__main__ import main
    assert main([str(tmp_path / "none.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("refree: error: cannot read the records of") == 2 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("trace", ["meta", "movielens"])
@pytest.mark.parametrize("share", [0, 1])
def test_the_fold_alone_as_the_rtl_s(trace, share):
    """The model's scheduler and fold datapath alone (rows always there) against the RTL's in
    Amaranth's simulator (verif/fold_harness.py) on the first part at B = 32: within 6 %
    (measured: Meta +3.6 % / -2.0 %, MovieLens +2.3 % / +5.4 %, `dedup` / `refree`)."""
    tr = make_trace(trace, 32, 1, **trace_options(trace, seed=3))
    plan = plan_part(tr.batch, partition(tr.batch, limits_of(EngineParams()))[0], "sum")
    rtl, _ = fold_cycles(plan, share, window=8, since_first_member=True)
    model = fold_alone_cycles(plan, share)
    assert abs(model / rtl - 1) <= 0.06, (model, rtl)
