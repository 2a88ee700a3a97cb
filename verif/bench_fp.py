# amaranth: UnusedElaboratable=no
"""Benchmark: simulated binary32 operations per second under Verilator (cocotb).

    python -m refree.verif.bench_fp [--ops 1000000] [--units add,mul,fma,div,sqrt,vector]

Each unit runs ``--ops`` biased random operations through the file-driven stream harness
(:mod:`refree.verif.stream_harness`) at full rate; the figure is operations per second of
simulation wall time between reset and the last result (Python is not in the per-cycle
loop), next to the end-to-end time of the run (simulator start, vector files, results
check). The vector unit counts element operations (beats x lanes). Builds are reused; the
first run of a unit includes its Verilator build in ``build``.
"""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["main"]


def _unit_vectors(unit: str, n: int):
    from .fp_cases import vectors
    vec = vectors(unit, n, seed=12345, specials=False)
    return vec.words(), vec.expected.tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refree.verif.bench_fp",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000_000,
                        help="operations per unit (default 1,000,000)")
    parser.add_argument("--units", default="add,mul,fma,div,sqrt,vector")
    parser.add_argument("--lanes", type=int, default=4, help="vector unit lanes")
    args = parser.parse_args(argv)

    from .toolchain import simulator_status
    ok, why = simulator_status("verilator")
    if not ok:
        print(f"verilator unavailable: {why}", file=sys.stderr)
        return 1
    from .fp_cases import UNITS
    from .stream_harness import StreamBench

    print(f"{'unit':<14}{'ops':>10}{'cycles':>10}{'sim s':>8}{'ops/s':>12}"
          f"{'run s':>8}{'build s':>9}")
    for unit in [u.strip() for u in args.units.split(",") if u.strip()]:
        t0 = time.perf_counter()
        if unit == "vector":
            from . import vector_ref as V
            from ..hw.fp.vector import VectorUnit
            lanes = args.lanes
            n_beats = max(1, args.ops // lanes)
            beats = V.random_beats(7, lanes, n_elementwise=n_beats)
            words = [V.pack_in(b, lanes) for b in beats]
            expected = [V.pack_out(r, lanes) for r in V.run(beats)]
            bench = StreamBench(VectorUnit, name=f"fp_vector_p{lanes}",
                                depth={"verilator": 1 << 20}, lanes=lanes)
            ops = len(words) * lanes
            name = f"vector P={lanes}"
        else:
            u = UNITS[unit]
            words, expected = _unit_vectors(unit, args.ops)
            bench = StreamBench(u.cls, name=u.name)
            ops = len(words)
            name = u.name
        prep = time.perf_counter() - t0
        stats = bench.run("verilator", words, expected, stall=0, tag="bench")
        rate = ops / stats["sim_s"]
        print(f"{name:<14}{ops:>10}{stats['cycles']:>10}{stats['sim_s']:>8.2f}{rate:>12,.0f}"
              f"{stats['run_s'] + prep:>8.1f}{stats['build_s']:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
