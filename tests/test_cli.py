"""The `refree` command line: reports, step outputs, and bad input (exit 2, nothing written)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refree.gen.cli import main
from refree.golden.batch import Batch, load_batch, save_batch
from refree.golden.errors import BatchError
from refree.golden.model import step


@pytest.fixture
def case(tmp_path):
    """A two-table batch with its tables, gradient and files."""
    rng = np.random.default_rng(0)
    idx = np.array([1, 2, 2, 0, 3, 1, 4, 4, 0, 1], np.int64)
    offs = np.array([0, 3, 5, 8, 10], np.int64)
    batch = Batch(idx, offs, 2)
    tables = [rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)]
    grad = rng.standard_normal((2, 8)).astype(np.float32)
    save_batch(tmp_path / "batch.npz", batch)
    np.savez(tmp_path / "tables.npz", table_0=tables[0], table_1=tables[1])
    np.save(tmp_path / "grad.npy", grad)
    return tmp_path, batch, tables, grad


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_batch_file_round_trip(case):
    d, batch, _, _ = case
    b = load_batch(d / "batch.npz")
    assert np.array_equal(b.indices, batch.indices) and np.array_equal(b.offsets, batch.offsets)
    assert b.batch_size == 2 and b.per_sample_weights is None


def test_int32_indices_and_offsets_are_widened_to_int64(case, capsys, tmp_path):
    """As FBGEMM's TBE and PyTorch's EmbeddingBag, a batch takes int32 or int64 indices and
    offsets (each its own); int32 is widened on construction, so the step is bit-exact with
    its int64 twin; the batch remembers each array's width, and its file keeps it."""
    d, batch, tables, grad = case
    for idx_dtype, offs_dtype in ((np.int32, np.int32), (np.int32, np.int64), (np.int64, np.int32)):
        b = Batch(batch.indices.astype(idx_dtype), batch.offsets.astype(offs_dtype), np.int32(2))
        assert b.indices.dtype == b.offsets.dtype == np.int64
        assert np.array_equal(b.indices, batch.indices) and np.array_equal(b.offsets, batch.offsets)
        assert (b.indices_int32, b.offsets_int32) == (idx_dtype == np.int32, offs_dtype == np.int32)
        save_batch(tmp_path / "b.npz", b)
        with np.load(tmp_path / "b.npz") as f:
            assert (f["indices"].dtype, f["offsets"].dtype) == (idx_dtype, offs_dtype)
        again = load_batch(tmp_path / "b.npz")
        assert (again.indices_int32, again.offsets_int32) == (b.indices_int32, b.offsets_int32)
    with pytest.raises(BatchError, match="do not fit int32"):
        Batch(np.array([0, 1 << 31]), np.array([0, 2]), 1).with_index_dtype(np.int32)
    np.savez(d / "int32.npz", indices=batch.indices.astype(np.int32), offsets=batch.offsets.astype(np.int32),
             batch_size=np.int32(2))
    outs = {}
    for name in ("batch", "int32"):
        code, out, _ = run(["step", d / f"{name}.npz", "--table", d / "tables.npz", "--grad", d / "grad.npy",
                            "--lr", "0.1", "--out", d / name / "out"], capsys)
        assert code == 0
        outs[name] = out, (d / name / "out" / "pooled.npy").read_bytes(), (d / name / "out" / "table.npz")
    assert outs["int32"][:2] == outs["batch"][:2]
    with np.load(outs["int32"][2]) as got, np.load(outs["batch"][2]) as want:
        assert all(got[k].tobytes() == want[k].tobytes() for k in want.files)


def test_analyze_json_has_the_documented_shape(case, capsys):
    d, batch, _, _ = case
    code, out, _ = run(["analyze", d / "batch.npz", "--json"], capsys)
    assert code == 0
    rep = json.loads(out)
    tot = rep["total"]
    assert set(tot["forward"]) >= {"reads", "adds"} and set(tot["backward"]) >= {"reads", "adds"}
    assert tot["forward"]["reads"] == {"baseline": 10, "dedup": 7, "refree": 7}   # rows {0,1,2,3} + {0,1,4}
    assert tot["update"]["rmw"]["baseline"] == 10
    assert len(rep["tables"]) == 2
    assert rep["tables"][0]["forward"]["adds"]["baseline"] == 3   # bags of 3 and 2


def test_a_trace_as_int32_counts_the_same(capsys):
    """--index-dtype int32 changes the arrays' width, not the batch: the same counts."""
    outs = []
    for dtype in ("int64", "int32"):
        code, out, _ = run(["analyze", "--trace", "meta", "--seed", "3", "--index-dtype", dtype, "--json"], capsys)
        assert code == 0
        outs.append(json.loads(out))
    assert outs[0]["total"] == outs[1]["total"]
    with pytest.raises(SystemExit) as e:         # (argparse's usage error)
        main(["analyze", "--trace", "zipf", "--index-dtype", "int16"])
    assert e.value.code == 2 and "--index-dtype" in capsys.readouterr().err


def test_analyze_text_report(case, capsys):
    d, *_ = case
    code, out, _ = run(["analyze", d / "batch.npz"], capsys)
    assert code == 0 and "forward   table-row reads" in out and "table 1" in out


def test_step_writes_the_golden_results_and_prints_counters(case, capsys):
    d, batch, tables, grad = case
    code, out, _ = run(["step", d / "batch.npz", "--table", d / "tables.npz", "--grad", d / "grad.npy",
                        "--lr", "0.1", "--out", d / "out", "--mode", "dedup"], capsys)
    assert code == 0
    want = step(tables, batch, grad, 0.1, mode="dedup")
    assert np.array_equal(np.load(d / "out" / "pooled.npy"), want.pooled)
    with np.load(d / "out" / "table.npz") as f:
        assert all(np.array_equal(f[f"table_{t}"], want.tables[t]) for t in range(2))
    assert json.loads(out)["counts"] == want.counts


def test_adagrad_steps_chain_through_the_state_file(case, capsys):
    d, batch, tables, grad = case
    common = ["--grad", d / "grad.npy", "--lr", "0.1", "--optimizer", "rowwise-adagrad"]
    assert run(["step", d / "batch.npz", "--table", d / "tables.npz", *common, "--out", d / "s1"], capsys)[0] == 0
    assert run(["step", d / "batch.npz", "--table", d / "s1" / "table.npz", *common, "--state",
                d / "s1" / "state.npz", "--out", d / "s2"], capsys)[0] == 0
    r1 = step(tables, batch, grad, 0.1, optimizer="rowwise-adagrad")
    r2 = step(r1.tables, batch, grad, 0.1, optimizer="rowwise-adagrad", state=r1.state)
    with np.load(d / "s2" / "table.npz") as f, np.load(d / "s2" / "state.npz") as s:
        assert np.array_equal(f["table_1"], r2.tables[1]) and np.array_equal(s["state_0"], r2.state[0])


def test_backward_by_rows_runs_adagrad_beyond_one_part(case, capsys):
    """Backward by rows (the default): row-wise Adagrad on a batch the configuration splits
    into parts, each distinct row updated once; --backward parts (the golden model's
    earlier rule) refuses it, and the RTL refuses --backward parts; both errors exit 2 and
    write nothing."""
    d, batch, tables, grad = case
    (d / "c.toml").write_text("[parts]\nmax_bags = 1\n")            # a part a bag
    common = ["step", d / "batch.npz", "--table", d / "tables.npz", "--grad", d / "grad.npy", "--lr", "0.1",
              "--optimizer", "rowwise-adagrad", "--config", d / "c.toml"]
    code, _, err = run([*common, "--backward", "parts", "--out", d / "parts"], capsys)
    assert code == 2 and "row-wise Adagrad by parts needs each table's batch in one part" in err
    code, out, _ = run([*common, "--out", d / "rows"], capsys)
    assert code == 0
    want = step(tables, batch, grad, 0.1, optimizer="rowwise-adagrad", backward="rows")
    with np.load(d / "rows" / "table.npz") as f:
        assert all(np.array_equal(f[f"table_{t}"], want.tables[t]) for t in range(2))
    rep = json.loads(out)
    assert rep["backward"] == "rows" and rep["counts"]["update"]["rmw"] == 4 + 3    # distinct rows
    assert rep["row_groups"] == [1, 1]              # (1,024 distinct rows a group fit)
    code, _, err = run([*common, "--backward", "parts", "--engine", "rtl", "--out", d / "rtl"], capsys)
    assert code == 2 and "refree: error: --backward" in err
    assert not (d / "parts").exists() and not (d / "rtl").exists()


def bad_batch(tmp, **arrays):
    np.savez(tmp / "bad.npz", **arrays)
    return tmp / "bad.npz"


GOOD = dict(indices=np.array([1, 2, 2, 0, 3, 1, 4, 4, 0, 1], np.int64),
            offsets=np.array([0, 3, 5, 8, 10], np.int64), batch_size=np.int64(2))

BAD_BATCHES = [
    ("offsets[0]", dict(offsets=np.array([1, 3, 5, 8, 10], np.int64))),
    ("offsets[2]", dict(offsets=np.array([0, 3, 2, 8, 10], np.int64))),
    ("offsets[4]", dict(offsets=np.array([0, 3, 5, 8, 9], np.int64))),
    ("offsets", dict(offsets=np.array([0, 3, 5, 10], np.int64))),
    ("indices[7]", dict(indices=np.array([1, 2, 2, 0, 3, 1, 4, 6, 0, 1], np.int64))),   # table 1 has 6 rows
    ("indices[2]", dict(indices=np.array([1, 2, 5, 0, 3, 1, 4, 4, 0, 1], np.int64))),   # table 0 has 5 rows
    ("indices[0]", dict(indices=np.array([-1, 2, 2, 0, 3, 1, 4, 4, 0, 1], np.int64))),
    ("indices", dict(indices=np.array([1, 2, 2, 0, 3, 1, 4, 4, 0, 1], np.float64))),
    ("indices", dict(indices=np.array([1, 2, 2, 0, 3, 1, 4, 4, 0, 2**63], np.uint64))),
    ("indices", dict(indices=np.array([1, 2, 2, 0, 3, 1, 4, 4, 0, 1], np.int16))),
    ("offsets", dict(offsets=np.array([0, 3, 5, 8, 10], np.float64))),
    ("offsets", dict(offsets=np.array([0, 1, 1, 1, 1], bool))),
    ("offsets[2]", dict(offsets=np.array([0, 3, 2, 8, 10], np.int32))),       # int32: the same checks
    ("per_sample_weights", dict(per_sample_weights=np.ones(10, np.float64))),
    ("per_sample_weights", dict(per_sample_weights=np.ones(9, np.float32))),
    ("batch_size", dict(batch_size=np.int64(0))),
    ("batch_size", dict(batch_size=np.array([2, 2]))),
    ("indices", dict(indices=np.ones((2, 5), np.int64))),
]


@pytest.mark.parametrize("field,change", BAD_BATCHES, ids=[f for f, _ in BAD_BATCHES])
def test_bad_batches_are_rejected_naming_the_field_and_nothing_is_written(case, capsys, field, change):
    d, *_ = case
    path = bad_batch(d, **{**GOOD, **change})
    code, out, err = run(["step", path, "--table", d / "tables.npz", "--grad", d / "grad.npy",
                          "--lr", "0.1", "--out", d / "out"], capsys)
    assert code == 2
    assert err.startswith(f"refree: error: {field}"), err
    assert not (d / "out").exists()


@pytest.mark.parametrize("missing", ["indices", "offsets", "batch_size"])
def test_a_batch_file_without_an_array_names_it_and_the_file(case, capsys, missing):
    d, *_ = case
    path = bad_batch(d, **{k: v for k, v in GOOD.items() if k != missing})
    code, _, err = run(["analyze", path], capsys)
    assert code == 2 and err == f"refree: error: {missing}: missing (batch file {path})\n", err


BAD_ARGS = [
    ("lr", ["--lr", "nan"]),
    ("lr", ["--lr", "inf"]),
    ("per_sample_weights", ["--pooling", "mean", "--batch", "weighted"]),
    ("grad", ["--grad", "wrong-grad"]),
    ("table_1", ["--table", "wrong-table"]),
    ("--pooling", ["--pooling", "max"]),
    ("optimizer", ["--mode", "baseline", "--optimizer", "rowwise-adagrad"]),
]


@pytest.mark.parametrize("field,args", BAD_ARGS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_ARGS)])
def test_bad_step_arguments_are_rejected(case, capsys, field, args):
    d, batch, tables, grad = case
    save_batch(d / "weighted.npz", Batch(batch.indices, batch.offsets, 2, np.ones(10, np.float32)))
    np.save(d / "wrong-grad.npy", grad.astype(np.float64))
    np.savez(d / "wrong-table.npz", table_0=tables[0], table_1=tables[1][:, :3])
    argv = dict(batch=d / "batch.npz", table=d / "tables.npz", grad=d / "grad.npy", lr="0.1")
    extra = []
    it = iter(args)
    for k in it:
        v = next(it)
        name = k.lstrip("-")
        if name in ("batch", "table", "grad"):
            v = d / f"{v}.npz" if name != "grad" else d / f"{v}.npy"
        if name in argv:
            argv[name] = v
        else:
            extra += [k, v]
    code, out, err = run(["step", argv["batch"], "--table", argv["table"], "--grad", argv["grad"],
                          "--lr", argv["lr"], "--out", d / "out", *extra], capsys)
    assert code == 2 and err.startswith(f"refree: error: {field}"), err
    assert not (d / "out").exists()


def test_installed_command_exits_2_on_bad_input(case):
    d, *_ = case
    path = bad_batch(d, **{**GOOD, "offsets": np.array([0, 3, 2, 8, 10], np.int64)})
    p = subprocess.run([sys.executable, "-m", "refree.gen.cli", "analyze", str(path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "offsets[2]: decreases: 2 after 3" in p.stderr


# --- the main job's output (refree rtl-check): counters, bounds, the step; no simulator here

def fake_rtl_run(batch, cycles, ranks=1, optimizer="sgd", dim=64):
    """What rtl_check returns, for the cycles given per mode: the counters move the
    compulsory beats of docs/design.md section 3 plus a second pass over the input."""
    from refree.gen.rtl import COUNTER_ROWS
    from refree.golden.planner import PartLimits
    from refree.golden.roofline import step_bounds
    bounds = step_bounds(batch, ["sum"] * batch.num_tables, PartLimits(), dim, ranks, optimizer)
    per_mode = {}
    for mode, per_job in cycles.items():
        per_mode[mode] = {"bounds": bounds[mode], "dram": {}}
        for job, cyc in zip(("forward", "backward"), per_job):
            c = {name: 0 for _, name, _ in COUNTER_ROWS}
            c.update({k: v for k, v in bounds[mode][job]["beats"].items() if k != "total"})
            c["input_reads"] *= 2
            c["cycles"] = cyc
            per_mode[mode][job] = c
            per_mode[mode]["dram"][job] = [{"data_bus_busy_cycles": cyc // 2, "activates": 7,
                                            "row_hits": 5, "refreshes": 1}] * ranks
    return per_mode


WORKED = Batch(np.array([5, 2, 0, 5, 2, 6, 5, 2, 1], np.int64), np.array([0, 3, 6, 8, 9], np.int64), 4)


def test_main_job_prints_bounds_not_the_old_bandwidth_bound():
    from refree.gen.rtl import format_counters
    per_mode = fake_rtl_run(WORKED, {"baseline": (440, 888), "dedup": (312, 236), "refree": (156, 472)})
    text = format_counters(per_mode, ranks=1)
    assert "bandwidth bound" not in text
    rows = {}
    for line in text.splitlines()[1:]:
        label, *cells = line.rsplit(None, 3)
        rows.setdefault(label.strip(), []).append(cells)
    assert rows["checking the batch"] and rows["streaming rows, folding"]        # the phases stay
    # worked example at D = 64, one rank: forward 55 / 39 / 39 compulsory beats (docs/design.md sec. 3)
    assert rows["compulsory beats (64 B; docs/design.md sec. 3)"][0] == ["55", "39", "39"]
    assert rows["beats moved (the counters)"][0] == ["58", "42", "42"]      # the input read twice
    assert rows["memory bound (cycles)"][0] == ["220", "156", "156"]
    assert rows["compute bound (cycles)"][0] == ["36", "36", "20"]
    assert rows["analysis bound (cycles)"][0] == ["9", "9", "9"]
    assert rows["roofline (the largest)"][1] == ["444", "236", "236"]
    assert rows["which bound"][0] == ["memory"] * 3
    assert rows["cycles / roofline"] == [["2.00", "2.00", "1.00"], ["2.00", "1.00", "2.00"]]
    assert rows["data-bus utilisation"][0] == ["0.500", "0.500", "0.500"]
    for label in ("ACTs", "row hits", "REFs"):
        assert len(rows[label]) == 2
    # the generic port: no DDR4 rows
    assert "ACTs" not in format_counters(per_mode) and "roofline" in format_counters(per_mode)


def test_main_job_ends_with_the_step_and_its_speed_up():
    from refree.gen.rtl import check_report, format_step_summary
    per_mode = fake_rtl_run(WORKED, {"baseline": (440, 888), "dedup": (312, 236), "refree": (156, 472)}, ranks=2)
    lines = format_step_summary(per_mode).splitlines()
    assert "speed-up over baseline" in lines[0]
    assert lines[1].split()[:8] == ["baseline", "440", "+", "888", "=", "1,328", "cycles", "1.00x"]
    assert lines[2].split()[5:8] == ["548", "cycles", "2.42x"]
    assert lines[3].split()[5:8] == ["628", "cycles", "2.11x"]
    # R = 2: memory 55 x 2 = 110 cycles, the roofline of baseline's forward: 440 / 110 = 4.00x
    assert "forward 4.00x its roofline (memory)" in lines[1]
    report = check_report(per_mode, ranks=2)
    json.dumps(report)
    assert report["dedup"]["step"]["speedup"] == pytest.approx(1328 / 548)
    assert report["dedup"]["forward"]["figures"]["moved_beats"] == 42
    assert report["dedup"]["forward"]["figures"]["bus_utilisation"] == pytest.approx(0.5)


def test_step_summary_without_baseline_under_adagrad():
    from refree.gen.rtl import format_step_summary
    per_mode = fake_rtl_run(WORKED, {"dedup": (312, 500), "refree": (156, 472)}, optimizer="rowwise-adagrad")
    lines = format_step_summary(per_mode).splitlines()
    assert "no baseline" in lines[0]
    assert lines[1].split()[:8] == ["dedup", "312", "+", "500", "=", "812", "cycles", "forward"]


def test_dram_figures_of_a_job():
    from refree.gen.rtl import dram_figures
    job = {"cycles": 100, "input_reads": 3, "table_reads": 8, "grad_reads": 0, "state_reads": 0,
           "table_writes": 0, "pooled_writes": 4, "state_writes": 0}
    ranks = [{"data_bus_busy_cycles": 40, "activates": 2, "row_hits": 3, "refreshes": 1}] * 2
    assert dram_figures(job, 2, ranks) == {"beats": 15, "bus_utilisation": 0.4, "activates": 4, "row_hits": 6,
                                           "refreshes": 2}


def test_bench_table_has_every_run_and_the_speed_ups():
    from refree.gen.bench_dram import format_table
    from refree.gen.rtl import check_report
    per_mode = fake_rtl_run(WORKED, {"baseline": (440, 888), "dedup": (312, 236), "refree": (156, 472)})
    text = format_table([{"trace": "movielens", "ranks": 1, "modes": check_report(per_mode, 1)},
                         {"trace": "meta", "ranks": 4, "modes": check_report(per_mode, 4)}])
    lines = text.splitlines()
    assert lines[0].split() == ["trace", "R", "mode", "job", "cycles", "memory", "compute", "analysis",
                                "cycles/roof", "bound", "moved", "compulsory", "bus", "uJ"]
    assert lines[1].split() == ["movielens", "1", "baseline", "forward", "440", "220", "36", "9", "2.00", "memory",
                                "58", "55", "0.500", "-"]       # (no energy in these fake runs)
    assert len([x for x in lines if x.startswith(("movielens", "meta"))]) == 2 * 6 + 2
    assert lines[-1].split() == ["meta", "4", "1,328", "(1.00x)", "548", "(2.42x)", "628", "(2.11x)"]


def test_counters_without_bounds_still_format():
    """A caller with only counters (no "bounds": not from rtl_check) gets them and, on DDR4,
    the DRAM rows."""
    from refree.gen.rtl import format_counters
    per_mode = fake_rtl_run(WORKED, {"dedup": (312, 236)})
    del per_mode["dedup"]["bounds"]
    text = format_counters(per_mode, ranks=1)
    assert "roofline" not in text and "data-bus utilisation" in text and "draining results" in text


def test_every_option_has_a_help_text_and_the_exit_codes_are_documented(capsys):
    """Each option and argument of every command (synth's own parser too) explains itself;
    the top-level help and each command's help end with the exit codes."""
    import argparse
    from refree.gen import bench_dram, synth
    from refree.gen.cli import EXIT_CODES, build_parser
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = {**subparsers.choices, "synth": synth.build_parser(EXIT_CODES),
                "bench": bench_dram.build_parser(EXIT_CODES)}
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in [("refree", parser), *commands.items()]
               for a in sub._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    missing += [f"refree {a.dest}" for a in subparsers._choices_actions if not a.help]
    assert missing == []
    assert parser.epilog == EXIT_CODES and all(sub.epilog == EXIT_CODES for sub in commands.values())
    for text in ("0 done", "1 a check failed", "2 bad input"):
        assert text in EXIT_CODES
    with pytest.raises(SystemExit) as exit_:
        main(["synth", "--help"])
    assert exit_.value.code == 0 and "--no-pnr" in capsys.readouterr().out


def test_version_is_the_installed_one_else_pyprojects(capsys, monkeypatch):
    import importlib.metadata
    import tomllib
    from pathlib import Path
    from refree.gen import cli
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"refree {importlib.metadata.version('refree')}"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    pyproject = tomllib.loads((Path(cli.__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert cli.package_version() == pyproject["project"]["version"]


# (an .npy table is one table, a valid --table: not damage)
DAMAGED = [(which, damage) for which in ("batch", "--table", "--grad")
           for damage in ("truncated", "object-array", "not-an-array", "npy-for-npz", "empty",
                          "member-not-npy", "huge-shape")
           if (which, damage) not in (("--table", "npy-for-npz"), ("--grad", "member-not-npy"))]


@pytest.mark.parametrize("which,damage", DAMAGED, ids=[f"{w}-{d}" for w, d in DAMAGED])
def test_damaged_files_are_rejected_without_a_traceback(case, capsys, damage, which):
    """A truncated .npz, an .npz holding an object array (a pickle), a file that is no
    array file at all, a file of the wrong kind, an empty file, a zip member that is no .npy
    and an .npy header declaring petabytes end in `refree: error: FIELD ...`, exit status 2,
    and nothing written."""
    import io
    import zipfile
    from numpy.lib import format as npy_format
    d, batch, tables, grad = case
    files = dict(batch=d / "batch.npz", table=d / "tables.npz", grad=d / "grad.npy")
    key = which.lstrip("-")
    bad = d / f"bad-{damage}{files[key].suffix}"
    if damage == "truncated":
        bad.write_bytes(files[key].read_bytes()[:-40])
    elif damage == "object-array":
        with open(bad, "wb") as f:              # (a handle: numpy would append its own suffix)
            np.savez(f, indices=np.array([1, "x", None], dtype=object), offsets=batch.offsets,
                     batch_size=np.int64(2))
    elif damage == "not-an-array":
        bad.write_text("indices,offsets\n1,2\n")
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "member-not-npy":
        with zipfile.ZipFile(files[key]) as good, zipfile.ZipFile(bad, "w") as z:
            for name in good.namelist():
                z.writestr(name, good.read(name))
            z.writestr("notes.txt", b"not an array")
    elif damage == "huge-shape":
        header = io.BytesIO()
        npy_format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**50,)})
        if bad.suffix == ".npy":
            bad.write_bytes(header.getvalue())
        else:                                   # (its first member)
            with zipfile.ZipFile(files[key]) as good, zipfile.ZipFile(bad, "w") as z:
                names = good.namelist()
                for name in names:
                    z.writestr(name, header.getvalue() if name == names[0] else good.read(name))
    elif key == "grad":
        with open(bad, "wb") as f:
            np.savez(f, grad=grad)
    else:
        with open(bad, "wb") as f:
            np.save(f, grad)
    assert bad.exists()
    files[key] = bad
    code, out, err = run(["step", files["batch"], "--table", files["table"], "--grad", files["grad"],
                          "--lr", "0.1", "--out", d / "out"], capsys)
    assert code == 2 and err.startswith(f"refree: error: {which}: ") and repr(str(bad)) in err, err
    assert "Traceback" not in err and not (d / "out").exists()


@pytest.mark.parametrize("where,extra,why", [("t.jsonl", ["--memory", "port"], "needs the DDR4 ranks"),
                                             ("no/t.jsonl", [], "cannot write")])
def test_a_timeline_that_cannot_be_written_is_refused_before_any_run(tmp_path, capsys, where, extra, why):
    """(No simulator runs: the option is checked first.)"""
    code, out, err = run(["rtl-check", "--batch-size", "4", "--timeline", tmp_path / where, *extra], capsys)
    assert code == 2 and err.startswith("refree: error: --timeline") and why in err, err
    assert out == "" and not (tmp_path / where).exists()


@pytest.mark.parametrize("case,why", [
    ("no store", "needs the buffer chip with a hot-row store"),
    ("port", "needs the buffer chip with a hot-row store"),
    ("too many", "holds 5 rows = 20 beats, more than the hot-row store's 16 beats"),
    ("twice", "hot rows of table 0: row 3 is listed twice"),
    ("outside", "hot rows of table 0: row 99999 is outside table 0"),
    ("tables", "must be an .npz with hot_0 .. hot_0"),
    ("floats", "hot_0 must be a 1-D array of integer rows"),
    ("missing", "cannot read")])
def test_a_bad_hot_set_is_refused_before_any_run(tmp_path, capsys, case, why):
    """``rtl-check --hot``: a chip without a store, a hot set larger than the store (the
    configuration's 16 beats: 4 rows of D = 64), a row twice or outside its table, the wrong
    tables, not integers, no file.  (No simulator runs: the set is checked first.)"""
    conf = tmp_path / "hot.toml"
    conf.write_text("[hot]\nbeats = 16\nways = 4\n")
    hot = {"too many": [0, 1, 2, 3, 4], "twice": [3, 1, 3], "outside": [99999], "floats": [1.5]}.get(case, [1])
    np.savez(tmp_path / "hot.npz", **({"hot_0": np.array(hot)} if case != "tables" else
                                      {"hot_0": np.array([1]), "hot_1": np.array([2])}))
    args = ["rtl-check", "--batch-size", "4", "--hot", tmp_path / ("none.npz" if case == "missing" else "hot.npz")]
    args += {"no store": [], "port": ["--memory", "port", "--config", conf]}.get(case, ["--config", conf])
    code, out, err = run(args, capsys)
    assert code == 2 and err.startswith("refree: error: --hot: ") and why in err, err
    assert out == "" and "Traceback" not in err


def _damage(data, cut, edits):
    """``data`` cut to ``cut`` bytes (if shorter), with each (position, bytes) of ``edits``
    written over it."""
    data = bytearray(data[:cut])
    for pos, new in edits:
        if data:
            pos %= len(data)
            data[pos:pos + len(new)] = new
    return bytes(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["batch", "table", "grad"]), cut=st.integers(0, 4096),
       edits=st.lists(st.tuples(st.integers(0, 4095), st.binary(max_size=8)), max_size=4))
def test_no_damaged_input_file_ends_in_a_traceback(case, capsys, which, cut, edits):
    """Fuzz: a batch, table or gradient file cut short and overwritten here and there ends
    in a result (exit 0) or in `refree: error: ...` (exit 2), never in an exception."""
    d, *_ = case
    files = dict(batch=d / "batch.npz", table=d / "tables.npz", grad=d / "grad.npy")
    bad = d / f"fuzzed{files[which].suffix}"
    bad.write_bytes(_damage(files[which].read_bytes(), cut, edits))
    files[which] = bad
    code, out, err = run(["step", files["batch"], "--table", files["table"], "--grad", files["grad"],
                          "--lr", "0.1", "--out", d / "out"], capsys)
    assert (code, err[:15]) in ((0, ""), (2, "refree: error: ")), err


def test_rtl_check_names_a_waves_file_per_mode():
    from refree.gen.rtl import waves_of
    assert waves_of("d/w.vcd", "dedup") == "d/w-dedup.vcd" and waves_of("w", "refree") == "w-refree"
    assert waves_of(None, "baseline") is None


@pytest.mark.slow
def test_rtl_check_runs_a_profiled_hot_set(tmp_path, capsys):
    """``refree profile --out`` then ``refree rtl-check --hot`` on the default chip with a
    store (a build of its own, about 8 minutes): every mode's step between a load and a
    flush, checked against the golden model (outputs and the store's counts), exit 0."""
    conf = tmp_path / "hot.toml"
    conf.write_text("[hot]\nbeats = 4096\n")
    code, _, err = run(["profile", "--batch-size", "32", "--batches", "6", "--out", tmp_path / "hot.npz"], capsys)
    assert code == 0, err
    code, out, err = run(["rtl-check", "--batch-size", "32", "--batch-index", "3", "--config", conf,
                          "--hot", tmp_path / "hot.npz"], capsys)
    assert code == 0, err
    lines = [x for x in out.splitlines() if "hot-row store:" in x]
    assert len(lines) == 3 and all(" 0 of the step's table beats" not in x for x in lines), out
