"""FAE's hot rows on the buffer chip's RTL: a stream of consecutive batches of a trace, each
mode with and without the hot-row store, side by side (issue 18): ``python -m
refree.verif.bench_hot [--trace movielens] [--batch-size 128] [--batches 20]
[--profile-batches 5] [--modes baseline,refree] [--beats 4096] [--out FILE.md]``.

The hot set is FAE's profile (``golden.hot_rows.profile``: 5 % of the inputs of the first
``--profile-batches`` batches, the budget the store's bytes), trimmed to what the store's
sets hold (``placement``: a row whose beats do not fit its sets is left out, in profile
order); the ``--batches`` after them are measured.  Each batch is one RTL run of the default
chip (``gen/default_config.toml``, one rank), with ``[hot] beats`` for the store: a load
job, the step's forward and backward jobs, a flush job; the tables go on from one batch to
the next.  The batches' arrays sit before the tables, so a batch's tables move with its
size and each run loads the hot set at its own addresses: the step's cycles and DRAM
traffic are the forward and backward jobs', the load and the flush (once per stream in a
run that kept its layout) are reported apart, one run's.  Each run's tables after the
flush must equal the run without the store's, bit for bit, and the store's hits the DRAM
beats it spared (else the bench stops).  Baseline as DESIGN.md defines it: ``baseline``
without the store, same chip, batch and ranks.  Long: about a minute a batch and mode."""
import argparse
import sys
import time

import numpy as np

from refree.golden.hot_rows import DEFAULT_SAMPLE, profile
from refree.golden.traces import trace_stream
from refree.hw.engine.engine import JOB_BACKWARD, JOB_FORWARD
from refree.hw.lrdimm.hot_row_store import placement
from refree.verif.staging import hot_row_beats

__all__ = ["main", "fit_beats"]

DIM = 64


def fit_beats(hot, lay, addr_bits, beats, ways):
    """The beat addresses of the hot rows that the store's sets hold, in profile order (a
    row whole or not at all, by the store's ``placement``), and the rows left out."""
    used, out, left_out = {}, [], 0
    listed = hot_row_beats(hot.rows, lay)         # (checked: rows inside their tables, once each)
    for k in range(0, len(listed), lay.row_beats):
        row = listed[k:k + lay.row_beats]
        if isinstance(placement(row, addr_bits, beats, ways, used), list):
            out += row
        else:
            left_out += 1
    return out, left_out


def _dram(run, job):
    return sum(r["reads"] + r["writes"] for r in run.dram[job])


def main(argv=None):
    from refree.gen.config import load_config
    from refree.gen.rtl import _runner
    from refree.verif.engine_run import JOB_HOT_FLUSH, JOB_HOT_LOAD
    from refree.verif.staging import layout, unpack_rows
    ap = argparse.ArgumentParser(prog="python -m refree.verif.bench_hot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="movielens")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="batches measured (default 20)")
    ap.add_argument("--profile-batches", type=int, default=5, help="earlier batches profiled (default 5)")
    ap.add_argument("--modes", default="baseline,refree")
    ap.add_argument("--beats", type=int, default=4096, help="the store's beats (default 4096: 256 KiB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    plain_conf = load_config(None)
    hot_conf = load_config(None, overrides={"hot": {"beats": args.beats}})
    plain, hot_chip = _runner(plain_conf, DIM, "verilator", "ddr4"), _runner(hot_conf, DIM, "verilator", "ddr4")
    A, ways = plain_conf.dram.mapping.addr_bits, hot_conf.hot.ways
    k = args.profile_batches
    batches, rows = trace_stream(args.trace, args.batch_size, 1, k + args.batches, seed=args.seed)
    hot, rep = profile(batches, rows, k, DEFAULT_SAMPLE, args.beats * 64, DIM, args.seed)
    rng = np.random.default_rng(args.seed)
    start = [rng.standard_normal((n, DIM)).astype(np.float32) * np.float32(0.1) for n in rows]
    lines = [f"FAE's hot rows on the RTL: {args.trace}, B = {args.batch_size}, T = 1, D = {DIM}, the default "
             f"chip (one rank), a store of {args.beats} beats ({args.beats * 64 // 1024} KiB, {ways}-way); "
             f"the hot set profiled on {DEFAULT_SAMPLE:.0%} of the inputs of {k} batches, the {args.batches} "
             f"after them measured.  `python -m refree.verif.bench_hot " + " ".join(argv or sys.argv[1:]) + "`", ""]
    print(lines[0], flush=True)
    totals = {}
    t0 = time.perf_counter()
    for mode in modes:
        tables = [E.copy() for E in start]
        tot = totals[mode] = dict(cycles=0, hot_cycles=0, dram=0, hot_dram=0, hits=0, load=0, flush=0,
                                  beats=0, left_out=0)
        for n, batch in enumerate(batches[k:]):
            grad = rng.standard_normal((batch.batch_size, DIM)).astype(np.float32) * np.float32(0.01)
            lay = layout(batch, tables, stripe=plain.staging_stripe)
            beats, left_out = fit_beats(hot, lay, A, args.beats, ways)
            p = plain.run(batch, tables, [JOB_FORWARD, JOB_BACKWARD], mode, grad=grad, lr=0.01)
            h = hot_chip.run(batch, tables, [JOB_HOT_LOAD, JOB_FORWARD, JOB_BACKWARD, JOB_HOT_FLUSH], mode,
                             grad=grad, lr=0.01, hot_beats=beats)
            assert p.errors == [0, 0] and h.errors == [0, 0, 0, 0], (p.errors, h.errors)
            base, n_rows, stride = lay.tables[0]
            new = unpack_rows(p.after, base, n_rows, stride, DIM)
            assert np.array_equal(new.view(np.uint32), unpack_rows(h.after, base, n_rows, stride, DIM).view(np.uint32)), \
                f"{mode}, batch {n}: the tables after the flush differ from the run without the store"
            c0, c2 = h.counters[0], h.counters[2]
            hits = c2["hot_read_hits"] + c2["hot_write_hits"] - c0["hot_read_hits"] - c0["hot_write_hits"]
            assert _dram(p, 0) + _dram(p, 1) == _dram(h, 1) + _dram(h, 2) + hits, f"{mode}, batch {n}: traffic"
            tot["cycles"] += p.cycles[0] + p.cycles[1]
            tot["hot_cycles"] += h.cycles[1] + h.cycles[2]
            tot["dram"] += _dram(p, 0) + _dram(p, 1)
            tot["hot_dram"] += _dram(h, 1) + _dram(h, 2)
            tot["hits"] += hits
            tot["load"], tot["flush"] = h.cycles[0], h.cycles[3]
            tot["beats"], tot["left_out"] = len(beats), left_out
            tot["flushed"] = h.counters[3]["hot_written_back"]
            tables = [new]
            print(f"  {mode} batch {n + 1}/{args.batches}: {p.cycles[0] + p.cycles[1]:,} -> "
                  f"{h.cycles[1] + h.cycles[2]:,} cycles, DRAM beats {_dram(p, 0) + _dram(p, 1):,} -> "
                  f"{_dram(h, 1) + _dram(h, 2):,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    ref = totals[modes[0]]["cycles"] if "baseline" not in totals else totals["baseline"]["cycles"]
    lines += ["| mode | store | step cycles (sum) | speed-up over `baseline` | DRAM beats (sum) | store hits |",
              "|---|---|---:|---:|---:|---:|"]
    for mode in modes:
        t = totals[mode]
        lines.append(f"| {mode} | none | {t['cycles']:,} | {ref / t['cycles']:.2f}x | {t['dram']:,} | 0 |")
        lines.append(f"| {mode} | {args.beats} beats | {t['hot_cycles']:,} | {ref / t['hot_cycles']:.2f}x | "
                     f"{t['hot_dram']:,} | {t['hits']:,} |")
    t = totals[modes[0]]
    lines += ["", f"The hot set: {t['beats']:,} beats loaded ({t['left_out']} profiled rows left out: their sets "
              f"were full); a load job {t['load']:,} cycles, a flush {t['flush']:,} cycles ({t['flushed']:,} dirty "
              f"beats, the last run's), once per stream.  The hot set's coverage of the measured batches: "
              f"{rep['after']['hot_lookups'] / max(rep['after']['lookups'], 1):.1%} of the lookups, "
              f"{rep['after']['hot_inputs'] / max(rep['after']['inputs'], 1):.1%} of the inputs."]
    print("\n".join(lines[1:]))
    if args.out:
        with open(args.out, "w") as f:
            f.write("# " + lines[0] + "\n" + "\n".join(lines[1:]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
