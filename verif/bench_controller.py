"""Data-bus utilisation (with the ACTs and row hits) of one rank's command engine on three
streams at DDR4-2400 (see
:mod:`.rank_harness`): ``python -m refree.verif.bench_controller [--quick]``.  Each run is
checked: no timing violation, every read equal to a reference memory, the engine's command
counts equal to the model's.  Minutes (Amaranth's simulator; ``--quick``: 200 rows)."""
import argparse

import numpy as np

from refree.hw.ddr4 import speed_grade
from refree.hw.ddr4.params import DramParams
from .rank_harness import check_run, data_bus_share, table_row_requests

#: (label, RankController keyword arguments): the defaults first
CONFIGS = [("the chip's default (window 24, watermarks 16 / 8)", dict(DramParams().controller_kwargs())),
           ("window 16, watermarks 8 / 4", dict(window=16, write_high=8, write_low=4)),
           ("window 8", dict(window=8, write_high=4, write_low=2)),
           ("window 24, REF every tREFI", dict(DramParams().controller_kwargs(), postpone_limit=1)),
           ("window 16, REF every tREFI", dict(window=16, write_high=8, write_low=4, postpone_limit=1))]


def streams(rows):
    return [("random rows, reads", lambda rng: table_row_requests(rng, rows, 4, 1 << 20, 0.0)),
            ("random rows, half written", lambda rng: table_row_requests(rng, rows, 4, 1 << 20, 0.5)),
            ("sequential bursts, reads", lambda rng: [(b, False, 0) for b in range(4 * rows)])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 rows instead of 2,000")
    args = ap.parse_args(argv)
    timing = speed_grade("DDR4-2400").timing()
    for label, kw in CONFIGS:
        figures = []
        for name, make in streams(200 if args.quick else 2000):
            rng = np.random.default_rng(11)
            dev, _, stats = check_run(make(rng), timing, rng, max_cycles=400_000, **kw)
            figures.append(f"{name} {data_bus_share(dev):.3f} ({stats['acts']} ACTs, "
                           f"{stats['hits']} row hits)")
        print(f"{label}: " + "; ".join(figures), flush=True)


if __name__ == "__main__":
    main()
