"""Benchmark (not a test) of the golden model: one schedule-exact step per mode.

Default case of issue 3: B = 1024, T = 8, bags of 20, D = 64, Zipf trace (10,000 rows
per table, alpha 1.05, seed 0), SGD.  Run: `make bench` or `python -m refree.golden.bench`.
"""
import argparse
import time

import numpy as np

from .model import step
from .traces import make_trace


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default="zipf")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--bag-len", type=int, default=20)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    kw = {"bag_len": args.bag_len} if args.trace in ("zipf", "uniform") else {}
    trace = make_trace(args.trace, args.batch_size, args.tables, seed=0, **kw)
    rng = np.random.default_rng(0)
    tables = [rng.standard_normal((n, args.dim)).astype(np.float32) for n in trace.num_rows]
    grad = rng.standard_normal((args.batch_size, args.tables * args.dim)).astype(np.float32)
    print(f"trace={args.trace} B={args.batch_size} T={args.tables} D={args.dim} "
          f"lookups={len(trace.batch.indices)}")
    for mode in ("baseline", "dedup", "refree"):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            step(tables, trace.batch, grad, 0.01, mode=mode)
            times.append(time.perf_counter() - t0)
        print(f"{mode:9s} step: best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s "
              f"over {args.repeat} runs")


if __name__ == "__main__":
    main()
