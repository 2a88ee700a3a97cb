"""The performance model (golden/perf/engine.py) against the RTL: every job of the
`make bench-dram` report (reports/bench-b128/report.json: MovieLens window 0 and the
Meta-calibrated trace, B = 128, R = 1, 2, 4, the three modes, both jobs) and of
reports/bench-b1024 (MovieLens B = 1,024, R = 1: parts, chunks and dry passes the B = 128
runs do not have), the backward jobs of reports/bench-adagrad (row-wise Adagrad, both
traces at B = 128, R = 1, 2, 4) and every job of reports/bench-zipf (Zipf alpha = 0.8, 1.0,
1.2, B = 128, R = 1, 4; nothing in the model was set on them) and of reports/bench-uniform
within the stated tolerance of the RTL's cycles, never
below the job's own bounds; and the sampled estimate of a batch too large to run whole
close to the whole run.

After a change of the engine, `make bench-dram`, `refree bench --traces movielens
--batch-size 1024 --ranks 1 --out reports/bench-b1024` and the commands in
reports/bench-adagrad/report.md and reports/bench-zipf/report.md rewrite the reports this
test reads."""
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
           for name in ("bench-b128", "bench-b1024", "bench-adagrad", "bench-zipf", "bench-uniform")]
# Issue 17's goal: every job within 5 % (the largest measured: Zipf alpha = 0.8, R = 1,
# `dedup` backward, -4.4 %; mean 1.4 % over the 102 jobs).
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def records():
    return [r for path in REPORTS for r in json.loads(path.read_text())["records"]]


@pytest.fixture(scope="module")
def rows(records):
    return calibration(records, limits_of(load_config(None).params))


def test_every_job_within_the_tolerance(rows):
    assert len(rows) == 102
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
    assert main(["--out", str(tmp_path / "no" / "such" / "t.md")]) == 2      # (before any run)
    assert "refree: error: --out" in capsys.readouterr().err


def test_the_calibration_table(rows, tmp_path, monkeypatch):
    """`python -m refree.golden.perf --out FILE`: the table of every job, and the largest and
    mean error, as the test above measures them."""
    from refree.golden.perf import __main__ as perf_main
    table = perf_main.render(rows)
    lines = table.splitlines()
    assert len([x for x in lines if x.startswith("| ")]) == len(rows) + 1      # (and the header)
    assert all(f"| {x['rtl']:,} | {x['model']:,} |" in line for x, line in zip(rows, lines[2:]))
    errs = [abs(x["model"] / x["rtl"] - 1) for x in rows]
    assert f"{len(rows)} jobs: largest error {max(errs):.1%}, mean {sum(errs) / len(errs):.1%}" in table
    monkeypatch.setattr(perf_main, "calibration", lambda records, limits, dram_only: rows)
    out = tmp_path / "t.md"
    assert perf_main.main(["--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# The performance model against the RTL") and text.endswith(table)
    assert "`python -m refree.golden.perf --out " in text


def _first_part_plan(trace, batch_size):
    tr = make_trace(trace, batch_size, 1, **trace_options(trace, seed=3))
    return plan_part(tr.batch, partition(tr.batch, limits_of(EngineParams()))[0], "sum")


def test_the_fold_alone_as_the_rtl_s_on_a_small_part():
    """`refree`'s forward fold by the model (the scheduler's classes from its FIFO free list,
    deferred members' rounds, the datapath's window, ring of row slots and read-after-write
    wait) against the RTL's scheduler and datapath (verif/fold_harness.py, Amaranth's
    simulator) on the Meta-calibrated trace's first part at B = 8 (repeated rows: coefficients
    that conflict): within 2 % (measured 444 against 446 cycles)."""
    plan = _first_part_plan("meta", 8)
    rtl, _ = fold_cycles(plan, 1, window=8, since_first_member=True)
    assert abs(fold_alone_cycles(plan, 1) / rtl - 1) <= 0.02, (fold_alone_cycles(plan, 1), rtl)


@pytest.mark.slow
@pytest.mark.parametrize("trace", ["meta", "movielens"])
@pytest.mark.parametrize("share", [0, 1])
def test_the_fold_alone_as_the_rtl_s(trace, share):
    """The model's scheduler and fold datapath alone (rows always there) against the RTL's in
    Amaranth's simulator (verif/fold_harness.py) on the first part at B = 32: within 4 %
    (measured: Meta -0.1 % / -0.3 %, MovieLens -0.2 % / +2.8 %, `dedup` / `refree`)."""
    plan = _first_part_plan(trace, 32)
    rtl, _ = fold_cycles(plan, share, window=8, since_first_member=True)
    model = fold_alone_cycles(plan, share)
    assert abs(model / rtl - 1) <= 0.04, (model, rtl)


def test_the_scale_benchmark_prints_each_figure(capsys):
    """`python -m refree.golden.perf.bench` (`make bench-scale`, B = 65,536 by default) on a
    small batch: a time for the counts, the golden step and each model job, and the model's
    cycles; a bad option is a usage error."""
    from refree.golden.perf.bench import main
    assert main(["--batch-size", "32", "--tables", "1", "--modes", "dedup"]) == 0
    out = capsys.readouterr().out
    for line in ("counts (parts, row groups, the three modes' counts): ", "golden step, dedup: ",
                 "model, dedup forward (R = 1): ", "model, dedup backward (R = 1): "):
        assert line in out and out.split(line)[1].split(" s")[0].replace(".", "").isdigit(), line
    assert out.count(" cycles") == 2
    with pytest.raises(SystemExit) as e:
        main(["--modes", "fast"])
    assert e.value.code == 2
