"""Benchmark (not a test): how long the golden model's counts, its step and the performance
model take at Meta's scale, B = 65,536 and T = 8 by default (issue 17's goal: each under a
minute on the development machine): ``python -m refree.golden.perf.bench [--batch-size B]
[--tables T] [--ranks R] [--modes LIST] [--what counts,step,model]``.

* counts: the parts and row groups (``plan_batch``, ``row_group_plans``) and the step's
  counts of the three modes (``step_counts``), as ``refree analyze`` and the bounds make them;
* step: one schedule-exact golden step a mode (``golden.model.step``, D = 64, SGD);
* model: the performance model's forward and backward job a mode (``job_cycles`` with
  ``refree sweep --kind model``'s ``MODEL_LOOKUPS``: a sample of the parts past it).

The trace is the Meta-calibrated one (seed 3; bags up to 1,024 lookups accepted, as ``make
reports``' ``--max-bag-len 1024``); the seconds are wall-clock on one core."""
import argparse
import time

import numpy as np

from refree.golden.counts import MODES
from refree.golden.traces import make_trace


def _timed(what, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"  {what}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def main(argv=None):
    from refree.gen.config import load_config
    from refree.gen.runs import MODEL_LOOKUPS
    from refree.golden.model import plan_batch, row_group_plans, step, step_counts
    from refree.hw.ddr4.params import DramParams
    from refree.verif.engine_run import limits_of
    from refree.verif.staging import layout
    from .engine import job_cycles
    ap = argparse.ArgumentParser(prog="python -m refree.golden.perf.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=65536, help="bags per table (default 65,536)")
    ap.add_argument("--tables", type=int, default=8, help="tables (default 8)")
    ap.add_argument("--ranks", type=int, default=1, help="ranks of the model's DRAM side (default 1)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default all three)")
    ap.add_argument("--what", default="counts,step,model", help="comma-separated: counts, step, model")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    what = set(args.what.split(","))
    if not set(modes) <= set(MODES) or not what <= {"counts", "step", "model"} or min(args.tables, args.ranks) < 1:
        ap.error("--modes takes baseline, dedup, refree; --what counts, step, model; --tables, --ranks >= 1")
    trace = _timed("the trace", lambda: make_trace("meta", args.batch_size, args.tables, seed=3))
    batch = trace.batch
    print(f"Meta-calibrated, B = {args.batch_size:,}, T = {args.tables}: {len(batch.indices):,} lookups", flush=True)
    conf = load_config(None)
    base = limits_of(conf.params)
    limits = type(base)(base.max_bags, base.max_lookups, base.max_distinct_rows, 1024)  # (Meta's long bags)
    pool = ["sum"] * args.tables
    if "counts" in what:
        def counts():
            plans = plan_batch(batch, pool, limits)
            by_rows = row_group_plans(batch, pool, limits)
            return [step_counts(plans, plans if m == "baseline" else by_rows, m, args.tables) for m in MODES]
        _timed("counts (parts, row groups, the three modes' counts)", counts)
    if "step" in what:
        rng = np.random.default_rng(0)
        tables = [rng.standard_normal((n, 64)).astype(np.float32) for n in trace.num_rows]
        grad = rng.standard_normal((args.batch_size, args.tables * 64)).astype(np.float32)
        for m in modes:
            _timed(f"golden step, {m}", lambda m=m: step([t.copy() for t in tables], batch, grad, 0.01, mode=m,
                                                          limits=limits))
    if "model" in what:
        params = DramParams(ranks=args.ranks)
        lay = layout(batch, [np.empty((n, 64), np.float32) for n in trace.num_rows],
                     stripe=params.mapping.staging_stripe)
        for m in modes:
            for job in ("forward", "backward"):
                run = _timed(f"model, {m} {job} (R = {args.ranks})",
                             lambda m=m, job=job: job_cycles(batch, lay, m, job, limits, params,
                                                             max_lookups=MODEL_LOOKUPS))
                print(f"    {run.cycles:,} cycles{' (sampled)' if run.sampled else ''}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
