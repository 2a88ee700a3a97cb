"""Benchmark (not a test): ``refree bench``, the main job's figures over traces and rank counts.

For each trace and R (default: MovieLens window 0 and the Meta-calibrated trace with seed 3,
B = 128, R = 1, 2, 4; one Verilator build of the buffer chip per R, reused afterwards) it
runs :func:`refree.gen.rtl.rtl_check` -- one step per mode on the RTL of the whole chip,
checked bit for bit against the golden model -- and prints, per trace, R, mode and job: the
cycles, the three bounds of docs/design.md section 3 (:mod:`refree.golden.roofline`), cycles /
roofline and the bound at the roofline, the beats moved (the counters) and the compulsory
beats, the data buses' utilisation, the job's energy in uJ (:mod:`refree.golden.energy`);
then each mode's step and the speed-up of ``dedup`` and ``refree`` over ``baseline``.  Run:
``refree bench``, ``make bench-dram`` or ``python -m refree.gen.bench_dram``.  A progress bar
on stderr counts the runs.

``--out DIR`` also writes the report (:mod:`refree.gen.bench_report`: ``report.md``,
``report.json``, PNG plots), with FBGEMM's CPU operator timed on the same batches beside it
when ``--fbgemm`` is given; ``--from-json FILE`` writes (or prints) the report of an earlier
run's ``--json`` or ``report.json`` without running anything; ``--json FILE`` writes the
records alone; ``--index-dtype int32`` gives the traces int32 offsets and indices.
"""
import argparse
import json
import os
import sys
import tomllib

from refree.golden.errors import BatchError

from .bench_report import prepare_dir, progress_bar, write_report
from .runs import check_points, int_list, point, point_config, run_point, trace_options

#: the traces and their options (MovieLens window 0; the Meta-calibrated trace's seed 3)
# The main job's traces: MovieLens' first window, the Meta-calibrated trace's seed 3.
TRACES = {"movielens": trace_options("movielens", batch_index=0), "meta": trace_options("meta", seed=3)}

COLUMNS = [("trace", "<", 10, "s"), ("R", ">", 2, "d"), ("mode", "<", 9, "s"), ("job", "<", 9, "s"),
           ("cycles", ">", 9, ",d"), ("memory", ">", 9, ",.0f"), ("compute", ">", 9, ",.0f"),
           ("analysis", ">", 9, ",.0f"), ("cycles/roof", ">", 11, ".2f"), ("bound", "<", 9, "s"),
           ("moved", ">", 8, ",d"), ("compulsory", ">", 10, ",d"), ("bus", ">", 6, ".3f"),
           ("uJ", ">", 7, ",.2f")]


def _row(values):
    """A line of the table; None prints as "-" (a figure the run has not: no energy off DDR4)."""
    return " ".join(f"{'-' if v is None else v:{a}{w}{'s' if v is None else fmt}}"
                    for v, (_, a, w, fmt) in zip(values, COLUMNS))


def format_table(records):
    """RTL records (:mod:`refree.gen.bench_report`) -> the text."""
    lines = [" ".join(f"{name:{a}{w}}" for name, a, w, _ in COLUMNS)]
    for rec in records:
        for mode, jobs in rec["modes"].items():
            for job in ("forward", "backward"):
                f = jobs[job]["figures"]
                lines.append(_row([rec["trace"], rec["ranks"], mode, job, f["cycles"], f["memory"], f["compute"],
                                   f["analysis"], f["cycles_over_roofline"], f["limit"], f["moved_beats"],
                                   f["compulsory_beats"], f.get("bus_utilisation", 0.0),
                                   jobs[job]["energy"]["total"] * 1e6 if "energy" in jobs[job] else None]))
    lines += ["", "the step (forward + backward cycles) and its speed-up over baseline:",
              f"{'trace':<10s} {'R':>2s} " + " ".join(f"{m:>18s}" for m in ("baseline", "dedup", "refree"))]
    for rec in records:
        cells = []
        for m in ("baseline", "dedup", "refree"):
            s = rec["modes"].get(m, {}).get("step")
            cells.append("" if s is None else f"{s['step']:,d}" + (f" ({s['speedup']:.2f}x)" if s["speedup"] else ""))
        lines.append(f"{rec['trace']:<10s} {rec['ranks']:>2d} " + " ".join(f"{c:>18s}" for c in cells))
    return "\n".join(lines)


def fbgemm_peers(records, repeats=30, warmup=5):
    """FBGEMM's CPU operator (one thread, the median of ``repeats`` steps) on each record's
    batch, once per batch, beside the RTL's ``refree`` step at the chip's clock."""
    import numpy as np
    import torch
    from refree.hw.ddr4.timing import speed_grade
    from refree.verif.bench_fbgemm import time_steps
    from .runs import point_trace
    torch.set_num_threads(1)
    peers, seen = [], set()
    for rec in records:
        key = (rec["trace"], json.dumps(rec["options"], sort_keys=True), rec["batch_size"], rec["index_dtype"])
        refree = rec["modes"].get("refree", {}).get("step")
        if key in seen or refree is None:
            continue
        seen.add(key)
        tr = point_trace(rec)
        times = time_steps(tr.batch, tr.num_rows, rec["dim"], rec["optimizer"], warmup, repeats)
        tck = float(speed_grade(point_config(rec).dram.grade).tck_ps) * 1e-12
        peers.append({"peer": "FBGEMM CPU TBE (fbgemm-gpu-cpu, 1 thread)", "trace": rec["trace"],
                      "batch_size": rec["batch_size"], "optimizer": rec["optimizer"],
                      "median_ms": float(np.median(times)) * 1e3, "refree_ms": refree["step"] * tck * 1e3,
                      "ranks": rec["ranks"]})
    return peers


def build_parser(epilog=None):
    p = argparse.ArgumentParser(prog="refree bench", description=__doc__.splitlines()[0], epilog=epilog)
    p.add_argument("--traces", default="movielens,meta", help=f"comma-separated, of {', '.join(TRACES)}")
    p.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts")
    p.add_argument("--batch-size", type=int, default=128, help="bags per table, B (default 128)")
    p.add_argument("--config", help="engine configuration TOML (see gen/default_config.toml)")
    p.add_argument("--index-dtype", choices=["int64", "int32"], default="int64",
                   help="width of the traces' offsets and indices (default int64)")
    p.add_argument("--json", metavar="FILE", help="also write every run's record (counters, bounds, figures)")
    p.add_argument("--out", metavar="DIR", help="write the report there: report.md, report.json, PNG plots")
    p.add_argument("--fbgemm", action="store_true", help="with --out: time FBGEMM's CPU operator on the same "
                                                        "batches (fbgemm-gpu-cpu, one thread) for the report")
    p.add_argument("--from-json", metavar="FILE", help="no runs: the report of an earlier --json or report.json "
                                                       "(printed, and written with --out)")
    p.add_argument("--title", default="refree bench: the main job on the RTL", help="the report's title")
    return p


def _parse(argv, epilog):
    p = build_parser(epilog)
    args = p.parse_args(argv)
    try:
        args.trace_list = args.traces.split(",")
        for t in args.trace_list:
            if t not in TRACES:
                raise ValueError(f"--traces: unknown trace {t!r} (known: {', '.join(TRACES)})")
        args.rank_list = int_list("--ranks", args.ranks)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be positive, not {args.batch_size}")
        if args.fbgemm and not args.out:
            raise ValueError("--fbgemm times FBGEMM for the report: give --out DIR")
    except ValueError as e:
        p.error(str(e))
    return args


def _overrides(path):
    """A configuration file as overrides of the defaults (checked by the points' load_config)."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BatchError("--config", f"{path}: {e}") from None


def _read_records(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise BatchError("--from-json", f"{path}: {e}") from None
    records = data["records"] if isinstance(data, dict) and "records" in data else data
    made_by = data.get("command") if isinstance(data, dict) else None
    bad = BatchError("--from-json", f"{path}: not the records of refree bench (--json or report.json)")
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("kind") == "rtl" for r in records):
        raise bad
    try:                                # (every figure the table and the report read)
        format_table(records)
        for r in records:
            r["batch_size"], r["tables"], r["options"], r["dim"], r["optimizer"], r["index_dtype"]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise bad from None
    return records, made_by


def main(argv=None, epilog=None):
    import shlex
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv, epilog)
    try:
        return _bench(args, shlex.join(["refree", "bench", *argv]))
    except BatchError as e:
        print(f"refree: error: {e}", file=sys.stderr)
        return 2


def _bench(args, command):
    failed = []
    if args.out:                        # (the outputs checked before any run)
        prepare_dir("--out", args.out)
    if args.json and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
        raise BatchError("--json", f"cannot write {args.json}")
    if args.from_json:
        records, made_by = _read_records(args.from_json)
        if made_by:                     # (a report.json: the runs were made by its command)
            command = f"{made_by}\n# re-rendered: {command}"
    else:
        config = _overrides(args.config)
        if isinstance(config.get("dram"), dict):
            config["dram"].pop("ranks", None)       # (--ranks gives them)
        points = [point("rtl", t, args.batch_size, ranks=r, options=TRACES[t], index_dtype=args.index_dtype,
                        config=config) for r in args.rank_list for t in args.trace_list]
        try:
            check_points(points)
        except (ValueError, TypeError) as e:
            raise BatchError("--config/--ranks", str(e)) from None
        progress, records = progress_bar(len(points)), []
        for n, p in enumerate(points):
            options = ", ".join([f"{k} {v}" for k, v in p["options"].items()] + [p["index_dtype"]])
            print(f"--- {p['trace']} ({options}), B={p['batch_size']}, {p['ranks']} rank(s)", flush=True)
            try:
                records.append(run_point(p, out=lambda s: print(s, flush=True)))
            except (AssertionError, BatchError) as e:     # (a difference; a batch beyond the chip)
                print(f"refree: error: {p['trace']}, R = {p['ranks']}: {e}", file=sys.stderr, flush=True)
                failed.append((p["trace"], p["ranks"], str(e)))
            progress(n + 1)
        print()
    print(format_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.out:
        peers = fbgemm_peers(records) if args.fbgemm else None
        plots = write_report(records, args.out, args.title, command, peers,
                             [f"{t}, R = {r}: {why}" for t, r, why in failed])
        print(f"report: {os.path.join(args.out, 'report.md')} (and report.json, {', '.join(plots) or 'no plots'})")
    if failed:
        print(f"failed: {', '.join(f'{t} R={r}' for t, r, _ in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
