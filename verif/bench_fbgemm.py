"""Benchmark (not a test): FBGEMM's CPU TBE operator timed on this machine on the project's
batches, what a user would run instead of the NMP: ``python -m refree.verif.bench_fbgemm``.

For each trace and batch size (default: MovieLens window 0 at B = 128, 1,024 and 4,096 and
the Meta-calibrated trace, seed 3, at B = 128 and 1,024; one table, D = 64, sum pooling), it
times one training step (forward, then the fused backward and update) of EXACT_SGD and
EXACT_ROWWISE_ADAGRAD on ``--threads`` torch threads (default 1: on this two-core machine
two threads beside other work were 30 to 100 times slower, ``tests/test_golden_fbgemm.py``),
after ``--warmup`` steps, and prints the median and the best of ``--repeats`` steps in ms,
and the lookups per second of the median.  The tables are standard normal, the upstream
gradient too; each step updates the operator's own tables, as training would.
``--json FILE`` writes every time measured.
"""
import argparse
import json
import sys
import time

import numpy as np
import torch

from refree.golden.traces import make_trace
from .fbgemm_peer import OPTIMIZERS, fbgemm_step, fbgemm_tbe

#: (trace, B, options of the trace)
RUNS = [("movielens", 128, {"batch_index": 0}), ("movielens", 1024, {"batch_index": 0}),
        ("movielens", 4096, {"batch_index": 0}), ("meta", 128, {"seed": 3}), ("meta", 1024, {"seed": 3})]


def time_steps(batch, num_rows, dim, optimizer, warmup, repeats, seed=0):
    """Seconds of each of ``repeats`` steps, after ``warmup`` untimed ones."""
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((n, dim)).astype(np.float32) for n in num_rows]
    grad = rng.standard_normal((batch.batch_size, batch.num_tables * dim)).astype(np.float32)
    tbe = fbgemm_tbe(tables, None, "sum", optimizer, lr=0.01, eps=1e-8)
    times = []
    for k in range(warmup + repeats):
        start = time.perf_counter()
        fbgemm_step(tbe, batch, grad, results=False)
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=64, help="D (default 64; FBGEMM needs a multiple of 4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", metavar="FILE", help="also write every time measured")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from importlib.metadata import version
    print(f"fbgemm-gpu-cpu {version('fbgemm-gpu-cpu')} CPU TBE, D={args.dim}, "
          f"{args.threads} thread(s), median and best of {args.repeats} steps after {args.warmup}")
    print(f"{'trace':<10s} {'B':>5s} {'lookups':>8s} {'optimizer':<16s} {'median ms':>10s} {'best ms':>8s} "
          f"{'Mlookups/s':>10s}")
    results = []
    for trace, B, options in RUNS:
        tr = make_trace(trace, B, 1, **options)
        lookups = len(tr.batch.indices)
        for optimizer in OPTIMIZERS:
            times = time_steps(tr.batch, tr.num_rows, args.dim, optimizer, args.warmup, args.repeats)
            med, best = float(np.median(times)), float(min(times))
            print(f"{trace:<10s} {B:>5d} {lookups:>8,d} {optimizer:<16s} {med * 1e3:>10.3f} {best * 1e3:>8.3f} "
                  f"{lookups / med / 1e6:>10.2f}", flush=True)
            results.append({"trace": trace, "batch_size": B, **options, "lookups": lookups, "dim": args.dim,
                            "optimizer": optimizer, "threads": args.threads, "seconds": times})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
