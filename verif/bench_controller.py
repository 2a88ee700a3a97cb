"""Data-bus utilisation (with the ACTs and row hits) of one rank's command engine on three
streams at DDR4-2400 (see
:mod:`.rank_harness`): ``python -m refree.verif.bench_controller [--quick]``; with
``--ranks R`` the whole DRAM side's port on random rows (:mod:`.dram_side_harness`).  Each run is
checked: no timing violation, every read equal to a reference memory, the engine's command
counts equal to the model's.  Minutes (Amaranth's simulator; ``--quick``: 200 rows)."""
import argparse

import numpy as np

from refree.hw.ddr4 import speed_grade
from refree.hw.ddr4.params import DramParams
from .rank_harness import check_clean, check_run, data_bus_share, table_row_requests

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


#: (label, DramSide keyword arguments beyond the chip's [dram] defaults)
SIDE_CONFIGS = [("the chip's default", {}), ("256 reads in flight", {"reads_in_flight": 256}),
                ("write watermarks 20 / 4", {"write_high": 20, "write_low": 4}),
                ("window 32, write watermarks 24 / 12", {"window": 32, "write_high": 24, "write_low": 12})]


def side_streams(rows, span):
    """Random four-beat rows read; and per lookup a gradient row and a table row read and
    the table row written back (``baseline``'s backward)."""
    def rmw(rng):
        reqs = []
        for g, r in rng.integers(0, span // 4, (rows, 2)):
            reqs += [(int(g) * 4 + j, False, 0) for j in range(4)] + [(int(r) * 4 + j, False, 0) for j in range(4)]
            reqs += [(int(r) * 4 + j, True, 5) for j in range(4)]
        return reqs
    return [("random rows, reads", lambda rng: [(int(r) * 4 + j, False, 0)
                                                 for r in rng.integers(0, span // 4, rows) for j in range(4)]),
            ("read-modify-write with a gradient row", rmw)]


def dram_side(ranks, rows):
    """The data port's utilisation (beats / cycles) of the whole DRAM side at ``ranks`` ranks."""
    from refree.hw.ddr4.params import DramParams
    from .dram_side_harness import GEOMETRY, run
    params = DramParams(ranks=ranks, rows=GEOMETRY.rows)
    for label, kw in SIDE_CONFIGS:
        figures = []
        for name, make in side_streams(rows, 1 << params.mapping.addr_bits):
            reqs = make(np.random.default_rng(1))
            got, devs, cycles = run(params.mapping, reqs, {}, max_cycles=400_000,
                                    **{**params.controller_kwargs(), **kw})
            for dev in devs:                # (every rank's commands legal, every read answered)
                check_clean(dev)
            assert len(got) == sum(1 for _, w, _ in reqs if not w)
            figures.append(f"{name} {len(reqs) / cycles:.3f} ({len(reqs):,} beats, {cycles:,} clocks)")
        print(f"{ranks} ranks, {label}: " + "; ".join(figures), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 rows instead of 2,000")
    ap.add_argument("--ranks", type=int, help="the whole DRAM side at this many ranks instead of one rank's "
                                              "engine (500 rows, 200 with --quick; port utilisation, a beat a "
                                              "clock at most)")
    args = ap.parse_args(argv)
    if args.ranks:
        return dram_side(args.ranks, 200 if args.quick else 500)
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
