"""Benchmark (not a test): the main job's figures over traces and rank counts, in one table.

For each trace and R (default: MovieLens window 0 and the Meta-calibrated trace with seed 3,
B = 128, R = 1, 2, 4; one Verilator build of the buffer chip per R, reused afterwards) it
runs :func:`refree.gen.rtl.rtl_check` -- one SGD step per mode on the RTL of the whole chip,
checked bit for bit against the golden model -- and prints, per trace, R, mode and job: the
cycles, the three bounds of docs/design.md section 3 (:mod:`refree.golden.roofline`), cycles /
roofline and the bound at the roofline, the beats moved (the counters) and the compulsory
beats, the data buses' utilisation, the job's energy in uJ (:mod:`refree.golden.energy`);
then each mode's step and the speed-up of ``dedup`` and ``refree`` over ``baseline``.  Run:
``make bench-dram`` or ``python -m refree.gen.bench_dram``; ``--json FILE`` also writes
everything measured; ``--index-dtype int32`` gives the traces int32 offsets and indices
(half the input beats).
"""
import argparse
import json
import sys
from dataclasses import replace

from refree.golden.traces import make_trace

from .config import load_config
from .rtl import check_report, rtl_check

#: the traces and their options (MovieLens window 0; the Meta-calibrated trace's seed 3)
TRACES = {"movielens": {"batch_index": 0}, "meta": {"seed": 3}}

COLUMNS = [("trace", "<", 10, "s"), ("R", ">", 2, "d"), ("mode", "<", 9, "s"), ("job", "<", 9, "s"),
           ("cycles", ">", 9, ",d"), ("memory", ">", 9, ",.0f"), ("compute", ">", 9, ",.0f"),
           ("analysis", ">", 9, ",.0f"), ("cycles/roof", ">", 11, ".2f"), ("bound", "<", 9, "s"),
           ("moved", ">", 8, ",d"), ("compulsory", ">", 10, ",d"), ("bus", ">", 6, ".3f"),
           ("uJ", ">", 7, ",.2f")]


def _row(values):
    """A line of the table; None prints as "-" (a figure the run has not: no energy off DDR4)."""
    return " ".join(f"{'-' if v is None else v:{a}{w}{'s' if v is None else fmt}}"
                    for v, (_, a, w, fmt) in zip(values, COLUMNS))


def format_table(results):
    """results: [(trace, R, report of :func:`refree.gen.rtl.check_report`)] -> the text."""
    lines = [" ".join(f"{name:{a}{w}}" for name, a, w, _ in COLUMNS)]
    for trace, r, rep in results:
        for mode, jobs in rep.items():
            for job in ("forward", "backward"):
                f = jobs[job]["figures"]
                lines.append(_row([trace, r, mode, job, f["cycles"], f["memory"], f["compute"], f["analysis"],
                                   f["cycles_over_roofline"], f["limit"], f["moved_beats"], f["compulsory_beats"],
                                   f.get("bus_utilisation", 0.0),
                                   jobs[job]["energy"]["total"] * 1e6 if "energy" in jobs[job] else None]))
    lines += ["", "the step (forward + backward cycles) and its speed-up over baseline:",
              f"{'trace':<10s} {'R':>2s} " + " ".join(f"{m:>18s}" for m in ("baseline", "dedup", "refree"))]
    for trace, r, rep in results:
        cells = []
        for m in ("baseline", "dedup", "refree"):
            s = rep.get(m, {}).get("step")
            cells.append("" if s is None else f"{s['step']:,d}" + (f" ({s['speedup']:.2f}x)" if s["speedup"] else ""))
        lines.append(f"{trace:<10s} {r:>2d} " + " ".join(f"{c:>18s}" for c in cells))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", default="movielens,meta", help=f"comma-separated, of {', '.join(TRACES)}")
    p.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--config", help="engine configuration TOML (see gen/default_config.toml)")
    p.add_argument("--index-dtype", choices=["int64", "int32"], default="int64",
                   help="width of the traces' offsets and indices (default int64)")
    p.add_argument("--json", metavar="FILE", help="also write every run's counters, bounds and figures")
    args = p.parse_args(argv)
    traces = args.traces.split(",")
    for t in traces:
        if t not in TRACES:
            p.error(f"--traces: unknown trace {t!r} (known: {', '.join(TRACES)})")
    ranks = [int(r) for r in args.ranks.split(",")]
    base = load_config(args.config)
    results, failed = [], []
    for r in ranks:
        conf = replace(base, dram=replace(base.dram, ranks=r))
        conf.window_params()
        for t in traces:
            tr = make_trace(t, args.batch_size, 1, **TRACES[t])
            batch = tr.batch.with_index_dtype(args.index_dtype)
            options = ", ".join([f"{k} {v}" for k, v in TRACES[t].items()] + [args.index_dtype])
            print(f"--- {t} ({options}), B={args.batch_size}, D={conf.dim}, {r} rank(s) of {conf.dram.grade}",
                  flush=True)
            try:
                per_mode = rtl_check(batch, tr.num_rows, conf, out=lambda s: print(s, flush=True))
            except AssertionError as e:
                print(f"refree: error: {t}, R = {r}: {e}", file=sys.stderr, flush=True)
                failed.append((t, r))
                continue
            results.append((t, r, check_report(per_mode, r)))
    print()
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"trace": t, "ranks": r, "batch_size": args.batch_size, "index_dtype": args.index_dtype,
                        "modes": rep}
                       for t, r, rep in results], f, indent=1)
    if failed:
        print(f"failed: {', '.join(f'{t} R={r}' for t, r in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
