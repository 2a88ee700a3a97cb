"""Reports (refree bench --out, refree sweep --out) and the sweep on Dask with its cache.

No simulator here: RTL records are built from synthetic runs (test_golden_energy's), bounds
records by the golden model at small B; the sweep runs on a local Dask cluster."""
import json

import pytest

from refree.gen.bench_report import ANCHORS, energy_saving, speedups, step_time, write_report
from refree.gen.cli import main
from refree.gen.rtl import check_report
from refree.gen.runs import point, run_point
from refree.gen.sweep import grid, point_key, run_grid
from refree.golden.roofline import step_bounds
from refree.golden.traces import make_trace
from refree.verif.engine_run import limits_of
from refree.gen.config import load_config
from test_golden_energy import synthetic_run

PNG = b"\x89PNG\r\n\x1a\n"


def rtl_record(ranks=1, batch_size=4):
    per_mode = synthetic_run()      # cycles 1200, 600, 400 a job: baseline, dedup, refree
    return {"kind": "rtl", "trace": "movielens", "options": {"batch_index": 0}, "batch_size": batch_size,
            "tables": 1, "ranks": ranks, "index_dtype": "int64", "dim": 64, "optimizer": "sgd", "config": {},
            "modes": check_report(per_mode, ranks)}


def table_rows(text, head):
    """The cells of a Markdown table's rows after the line ``head``."""
    lines = text.splitlines()
    i = lines.index(head)
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_an_rtl_report_shows_the_steps_the_phases_the_energy_and_the_anchors(tmp_path):
    recs = [rtl_record(1), rtl_record(2)]
    plots = write_report(recs, tmp_path, "t", "refree bench --x")
    assert plots == ["speedup_vs_ranks.png", "time_per_phase.png", "energy_per_component.png"]
    for name in plots:
        assert (tmp_path / name).read_bytes()[:8] == PNG
    md = (tmp_path / "report.md").read_text()
    steps = table_rows(md, "| trace | B | T | R | baseline | dedup | refree |")
    base_e = sum(recs[0]["modes"]["baseline"][j]["energy"]["total"] for j in ("forward", "backward"))
    ref_e = sum(recs[0]["modes"]["refree"][j]["energy"]["total"] for j in ("forward", "backward"))
    assert steps[0] == ["movielens (batch_index 0)", "4", "1", "1", "2,400 (1.00x)", "1,200 (2.00x), energy "
                        f"{energy_saving(recs[0])['dedup']:.2f}x less", f"800 (3.00x), energy {base_e / ref_e:.2f}x less"]
    jobs = table_rows(md, md.splitlines()[[l.startswith("| trace | B | T | R | mode | job | cycles")
                                            for l in md.splitlines()].index(True)])
    assert len(jobs) == 2 * 3 * 2 and jobs[0][6] == "1,200" and jobs[0][5] == "forward"
    anchors = table_rows(md, next(l for l in md.splitlines() if l.startswith("| system | figure | published |")))
    assert anchors[0][3] == f"best 3.00x (`refree`, movielens (batch_index 0), B = 4, R = 1); {10.9 / 3:.2f}x short " \
                            "of the published figure"
    saving = [energy_saving(r)[m] for r in recs for m in ("dedup", "refree")]
    assert anchors[1][3].startswith(f"mean {sum(saving) / 4:.2f}x over the 4 steps")
    assert len(anchors) == len(ANCHORS)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["records"] == json.loads(json.dumps(recs)) and data["plots"] == plots


def test_a_bounds_report_gives_the_ratio_of_the_rooflines(tmp_path):
    recs = [run_point(point("bounds", "zipf", 64, options={"seed": 1, "alpha": a})) for a in (0.8, 1.2)]
    tr = make_trace("zipf", 64, 1, seed=1, alpha=1.2)
    b = step_bounds(tr.batch, ["sum"], limits_of(load_config().params), 64, 1, fold_lanes=64)
    roof = {m: b[m]["forward"]["roofline"] + b[m]["backward"]["roofline"] for m in b}
    assert step_time(recs[1], "dedup") == roof["dedup"]
    assert speedups(recs[1])["refree"] == pytest.approx(roof["baseline"] / roof["refree"])
    assert write_report(recs, tmp_path, "t", "c") == ["speedup_vs_skew.png"]
    md = (tmp_path / "report.md").read_text()
    steps = table_rows(md, "| trace | B | T | R | baseline | dedup | refree |")
    assert steps[1][6] == f"{roof['refree']:,.0f} ({roof['baseline'] / roof['refree']:.2f}x)"
    assert "lower bounds on the cycles, not predictions" in md
    assert "no RTL run in this report" in md


def test_a_model_report_gives_the_model_cycles_beside_the_bounds(tmp_path):
    """A `model` run: each job's cycles by the performance model (golden/perf/engine.py),
    never below its roofline, the step their sum; the report's own section and step table."""
    from refree.golden.perf.engine import job_cycles
    from refree.hw.ddr4.params import DramParams
    from refree.verif.staging import layout
    import numpy as np
    rec = run_point(point("model", "zipf", 64, options={"seed": 1}, ranks=2))
    tr = make_trace("zipf", 64, 1, seed=1)
    params = DramParams(ranks=2)
    lay = layout(tr.batch, [np.zeros((n, 64), np.float32) for n in tr.num_rows], stripe=params.mapping.staging_stripe)
    for m, v in rec["modes"].items():
        for j in ("forward", "backward"):
            f = v[j]["figures"]
            assert f["cycles"] == job_cycles(tr.batch, lay, m, j, limits_of(load_config().params), params)[0]
            assert f["cycles"] >= f["roofline"] and not f["sampled"]
        assert step_time(rec, m) == v["forward"]["figures"]["cycles"] + v["backward"]["figures"]["cycles"]
    write_report([rec], tmp_path, "t", "c")
    md = (tmp_path / "report.md").read_text()
    assert "## The performance model" in md and "not by the RTL" in md
    steps = table_rows(md, "| trace | B | T | R | baseline | dedup | refree |")
    assert steps[0][4] == f"{step_time(rec, 'baseline'):,.0f} (1.00x)"
    # row-wise Adagrad: no baseline; its backward pays the unit (two D / P cycles a row) and
    # the state beats, so it takes longer than the SGD step's
    ada = run_point(point("model", "zipf", 64, options={"seed": 1}, ranks=2, optimizer="rowwise-adagrad"))
    assert set(ada["modes"]) == {"dedup", "refree"}
    for m, v in ada["modes"].items():
        assert v["forward"]["figures"]["cycles"] == rec["modes"][m]["forward"]["figures"]["cycles"]
        assert v["backward"]["figures"]["cycles"] > rec["modes"][m]["backward"]["figures"]["cycles"]
        assert v["backward"]["figures"]["cycles"] >= v["backward"]["figures"]["roofline"]


def test_bench_from_json_writes_the_report_without_running(tmp_path, capsys):
    src = tmp_path / "runs.json"
    src.write_text(json.dumps([rtl_record(1)]))
    assert main(["bench", "--from-json", str(src), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-2].split()[:6] == ["movielens", "1", "2,400", "(1.00x)", "1,200", "(2.00x)"]
    assert (tmp_path / "rep" / "report.md").exists()
    src.write_text(json.dumps([{"kind": "bounds", "modes": {}}]))
    assert main(["bench", "--from-json", str(src)]) == 2
    assert "refree: error: --from-json" in capsys.readouterr().err
    src.write_text(json.dumps([rtl_record(1)]))       # (FBGEMM's times go into a report: --out)
    assert status(["bench", "--fbgemm", "--from-json", str(src)]) == 2
    for ranks, msg in (("1,x", "comma-separated integers, not '1,x'"), ("0", "0 is not positive")):
        assert status(["bench", "--ranks", ranks]) == 2     # (the sweep's rule: gen/runs.py's int_list)
        assert f"--ranks: {msg}" in capsys.readouterr().err


# --- the sweep

def test_a_grid_runs_on_dask_and_a_second_run_computes_nothing(tmp_path, monkeypatch):
    import refree.gen.runs
    import refree.gen.sweep as sweep
    points = grid("bounds", ["movielens", "zipf"], [32], [1, 2], alphas=(0.8,), lanes=(32,))
    assert len(points) == 4 and points[0]["config"] == {"engine": {"fold_lanes": 32}}
    want = [run_point(p) for p in points]
    calls = []
    real = refree.gen.sweep.run_point
    monkeypatch.setattr(sweep, "run_point", lambda p: calls.append(p) or real(p))
    recs, errors, stats = run_grid(points, workers=1, processes=False, cache_dir=str(tmp_path))
    assert (recs, errors, stats) == (want, {}, {"cached": 0, "computed": 4, "failed": 0}) and len(calls) == 4
    recs2, _, stats2 = run_grid(points, workers=1, processes=False, cache_dir=str(tmp_path))
    assert recs2 == want and stats2 == {"cached": 4, "computed": 0, "failed": 0} and len(calls) == 4
    (tmp_path / f"{point_key(points[1])}.json").write_text("{")     # a damaged record: run again
    recs3, _, stats3 = run_grid(points, workers=1, processes=False, cache_dir=str(tmp_path))
    assert recs3 == want and stats3["computed"] == 1 and calls[-1] == points[1]
    assert want[0]["modes"]["dedup"]["forward"]["bounds"]["units"]["fold"] == pytest.approx(
        want[0]["modes"]["dedup"]["forward"]["bounds"]["analysis"] * 64 / 32)     # (32 lanes taken)


def test_a_runs_key_is_its_inputs():
    p = point("bounds", "zipf", 64, options={"seed": 1, "alpha": 0.8})
    assert point_key(p) == point_key(point("bounds", "zipf", 64, options={"alpha": 0.8, "seed": 1}))
    others = [point("bounds", "zipf", 65, options={"seed": 1, "alpha": 0.8}),
              point("bounds", "zipf", 64, ranks=2, options={"seed": 1, "alpha": 0.8}),
              point("bounds", "zipf", 64, options={"seed": 1, "alpha": 0.9}),
              point("rtl", "zipf", 64, options={"seed": 1, "alpha": 0.8}),
              point("bounds", "zipf", 64, options={"seed": 1, "alpha": 0.8}, config={"parts": {"max_bags": 64}})]
    assert len({point_key(q) for q in others} | {point_key(p)}) == len(others) + 1


def test_a_failed_run_is_reported_and_not_cached(tmp_path):
    bad = point("bounds", "meta", 256, options={"seed": 3})      # a bag beyond 64 lookups
    good = point("bounds", "movielens", 16, options={"batch_index": 0})
    recs, errors, stats = run_grid([good, bad], workers=1, processes=False, cache_dir=str(tmp_path))
    assert recs[0] is not None and recs[1] is None and "exceeds the limits" in errors[1]
    assert stats == {"cached": 0, "computed": 1, "failed": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{point_key(good)}.json"]


def test_a_reports_labels_tell_its_runs_apart(tmp_path):
    recs = [run_point(point("bounds", "zipf", 32, options={"seed": 1}, config={"engine": {"fold_lanes": lanes}},
                            ranks=r)) for lanes in (16, 64) for r in (1, 2)]
    write_report(recs, tmp_path, "t", "c")
    rows = table_rows((tmp_path / "report.md").read_text(), "| trace | B | T | R | baseline | dedup | refree |")
    assert len({(r[0], r[3]) for r in rows}) == 4 and "fold_lanes 16" in rows[0][0]


def test_the_sweep_command(tmp_path, capsys):
    args = ["sweep", "--traces", "zipf", "--alphas", "0.8,1.2", "--batch-sizes", "64", "--workers", "1",
            "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "rep")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 from the cache, 2 computed, 0 failed" in out
    assert (tmp_path / "rep" / "speedup_vs_skew.png").read_bytes()[:8] == PNG
    assert main(args) == 0
    assert "2 from the cache, 0 computed, 0 failed" in capsys.readouterr().out
    for bad, msg in ((["--lanes", "48"], "--lanes: 48 is not one of"), (["--traces", "x"], "unknown trace"),
                     (["--ranks", "3"], "ranks must be a power of two"), (["--alphas", "0"], "must be positive")):
        assert status(["sweep", "--no-cache"] + bad) == 2, bad
        assert msg in capsys.readouterr().err, bad


def status(argv):
    """The command's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.torch
def test_fbgemm_beside_the_rtl_runs():
    """FBGEMM's CPU operator timed once per batch of the records, beside the `refree` step
    at the chip's clock (DDR4-2400: 0.833 ns a cycle)."""
    from refree.gen.bench_dram import fbgemm_peers
    recs = [rtl_record(1), rtl_record(2)]           # (one batch: timed once)
    (peer,) = fbgemm_peers(recs, repeats=2, warmup=0)
    assert peer["trace"] == "movielens" and peer["batch_size"] == 4 and peer["median_ms"] > 0
    assert peer["refree_ms"] == pytest.approx(800 * 0.833e-6, rel=1e-3)
