"""The fold's own speed: the sharing scheduler and the fold datapath alone (Amaranth's
simulator, :mod:`.fold_harness`) on each part of a trace's first table, with the rows always
there, for each issue window: ``python -m refree.verif.bench_fold [--trace meta --seed 3]
[--windows 1,8,16]``.  Prints per part and mode the datapath's operations (finals included),
the cycles, and operations a cycle: what the forward job's streaming phase can at best be
once its rows are on chip.  D = 16 on 16 lanes (one beat an operation, as the chip's D = 64
on 64 lanes, and much faster to simulate).  Minutes."""
import argparse

from refree.golden.planner import partition, plan_part
from refree.golden.traces import make_trace
from refree.gen.runs import int_list, trace_options
from refree.hw.engine.params import EngineParams
from .engine_run import limits_of
from .fold_harness import fold_cycles


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m refree.verif.bench_fold", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="meta", help="a trace name (default: meta)")
    ap.add_argument("--batch-size", type=int, default=128, help="bags per table (default: 128)")
    ap.add_argument("--seed", type=int, default=3, help="the synthetic traces' seed (default: 3)")
    ap.add_argument("--windows", default="1,8,16", help="issue windows, comma-separated (default: 1,8,16)")
    ap.add_argument("--modes", default="dedup,refree", help="dedup and/or refree (default: both)")
    args = ap.parse_args(argv)
    windows = int_list("--windows", args.windows)
    trace = make_trace(args.trace, args.batch_size, 1, **trace_options(args.trace, seed=args.seed))
    parts = partition(trace.batch, limits_of(EngineParams()))
    print(f"{args.trace}, B = {args.batch_size}: {len(parts)} part(s) (the default chip's part limits)")
    for k, part in enumerate(parts):
        plan = plan_part(trace.batch, part, "sum")
        for mode in args.modes.split(","):
            share = {"dedup": 0, "refree": 1}[mode]
            cells = []
            for w in windows:
                cycles, ops = fold_cycles(plan, share, window=w)
                cells.append(f"window {w}: {cycles:,} cycles ({ops / max(cycles, 1):.2f} op/cycle)")
            print(f"  part {k}, {mode:6s}: {len(plan.rows):,} rows, {ops:,} operations; " + "; ".join(cells))


if __name__ == "__main__":
    main()
