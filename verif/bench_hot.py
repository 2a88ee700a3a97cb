"""FAE's hot rows on the buffer chip: a stream of consecutive batches of a trace, each mode
with and without the hot-row store, side by side (issue 18): ``python -m
refree.verif.bench_hot [--trace movielens] [--batch-size 128] [--batches 20]
[--profile-batches 5] [--modes baseline,dedup,refree] [--beats 4096] [--config FILE]
[--engine rtl|model] [--out FILE.md]``.

The hot set is FAE's profile (``golden.hot_rows.profile``: 5 % of the inputs of the first
``--profile-batches`` batches, the budget the store's bytes), trimmed to what the store's
sets hold (``staging.fit_hot_beats``: a row whose beats do not fit its set is left out, in
profile order); the ``--batches`` after them are measured, the tables going on from one
batch to the next.  Baseline as DESIGN.md defines it: ``baseline`` without the store, same
chip, batch and ranks.

``--engine rtl`` (default): each batch is one RTL run of the chip (``--config``, default
``gen/default_config.toml``; ``[hot] beats`` set to ``--beats`` for the store): a load job,
the step's forward and backward jobs, a flush job; and one run of the chip without the
store.  Each run's tables after the flush must equal the run's without the store bit for
bit, and its DRAM beats plus the store's hits the run's without it (else the bench stops).
A step's cycles are the engine's (its ``cycles`` counter, as ``refree bench``'s); the load
and flush jobs' are the host's (from its CONTROL write to the STATUS that ends the job),
reported apart, once per stream (the batches' arrays sit before the tables, so a batch's
tables move with its size and each run loads the hot set at its own addresses).  The
performance model (``golden/perf``, its store ``golden/perf/hot_store.py``) runs each job
beside, and its error is reported: the store's calibration.  Long: about a minute a batch
and mode.

``--engine model``: the performance model alone (batches too large for the RTL in a bench:
B = 1,024); the DRAM beats and hits are the model's, which equal the RTL's (the traffic is
the schedule's)."""
import argparse
import sys
import time
import tomllib

import numpy as np

from refree.golden.hot_rows import DEFAULT_SAMPLE, profile
from refree.golden.traces import trace_stream
from refree.hw.engine.engine import JOB_BACKWARD, JOB_FORWARD
from refree.verif.staging import fit_hot_beats

__all__ = ["main"]

STEP_JOBS = ("forward", "backward")


def _dram(run, job):
    return sum(r["reads"] + r["writes"] for r in run.dram[job])


def _model_step(batch, lay, mode, limits, params, hot_beats=None):
    """The performance model's step: (cycles, DRAM beats, store hits)."""
    from refree.golden.perf.engine import job_cycles
    runs = [job_cycles(batch, lay, mode, job, limits, params, hot_beats=hot_beats) for job in STEP_JOBS]
    return (sum(r.cycles for r in runs), sum(r.commands["reads"] + r.commands["writes"] for r in runs),
            sum(r.commands.get("hot_hits", 0) for r in runs))


def _rtl_step(plain, hot_chip, batch, tables, mode, beats, grad, where):
    dim = plain.dim
    """One batch on the RTL with and without the store, checked: ((cycles, DRAM beats,
    hits) without and with, the tables after, the load's and the flush's host cycles and
    beats flushed)."""
    from refree.verif.engine_run import JOB_HOT_FLUSH, JOB_HOT_LOAD
    from refree.verif.staging import unpack_rows
    p = plain.run(batch, tables, [JOB_FORWARD, JOB_BACKWARD], mode, grad=grad, lr=0.01)
    h = hot_chip.run(batch, tables, [JOB_HOT_LOAD, JOB_FORWARD, JOB_BACKWARD, JOB_HOT_FLUSH], mode,
                     grad=grad, lr=0.01, hot_beats=beats)
    assert p.errors == [0, 0] and h.errors == [0, 0, 0, 0], (where, p.errors, h.errors)
    base, n_rows, stride = p.lay.tables[0]
    new = unpack_rows(p.after, base, n_rows, stride, dim)
    assert np.array_equal(new.view(np.uint32), unpack_rows(h.after, base, n_rows, stride, dim).view(np.uint32)), \
        f"{where}: the tables after the flush differ from the run without the store"
    c0, c2 = h.counters[0], h.counters[2]
    hits = c2["hot_read_hits"] + c2["hot_write_hits"] - c0["hot_read_hits"] - c0["hot_write_hits"]
    without = (p.counters[0]["cycles"] + p.counters[1]["cycles"], _dram(p, 0) + _dram(p, 1), 0)
    with_store = (h.counters[1]["cycles"] + h.counters[2]["cycles"], _dram(h, 1) + _dram(h, 2), hits)
    assert without[1] == with_store[1] + hits, f"{where}: the DRAM beats and the hits do not add up"
    return without, with_store, new, (h.cycles[0], h.cycles[3], h.counters[3]["hot_written_back"])


def main(argv=None):
    from refree.gen.config import load_config
    from refree.gen.rtl import _runner
    from refree.gen.runs import check_modelled
    from refree.verif.engine_run import limits_of
    from refree.verif.staging import layout
    ap = argparse.ArgumentParser(prog="python -m refree.verif.bench_hot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="movielens")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="batches measured (default 20)")
    ap.add_argument("--profile-batches", type=int, default=5, help="earlier batches profiled (default 5)")
    ap.add_argument("--modes", default="baseline,dedup,refree")
    ap.add_argument("--beats", type=int, default=4096, help="the store's beats (default 4096: 256 KiB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", metavar="FILE", help="the chip's configuration (default: gen/default_config.toml)")
    ap.add_argument("--engine", choices=["rtl", "model"], default="rtl")
    ap.add_argument("--out", help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    plain_conf = load_config(args.config, overrides={"hot": {"beats": 0}})
    hot_conf = load_config(args.config, overrides={"hot": {"beats": args.beats}})
    rtl, dim = args.engine == "rtl", plain_conf.dim
    if not rtl:         # (the model: the default engine, its part limits; the store by --beats)
        sections = set()
        if args.config:
            with open(args.config, "rb") as f:
                sections = set(tomllib.load(f)) - {"hot"}
        check_modelled(sections, plain_conf)
    if rtl:
        plain, hot_chip = _runner(plain_conf, dim, "verilator", "ddr4"), _runner(hot_conf, dim, "verilator", "ddr4")
    params, limits = plain_conf.dram, limits_of(plain_conf.params)
    k = args.profile_batches
    batches, rows = trace_stream(args.trace, args.batch_size, 1, k + args.batches, seed=args.seed)
    hot, rep = profile(batches, rows, k, DEFAULT_SAMPLE, args.beats * 64, dim, args.seed)
    rng = np.random.default_rng(args.seed)
    start = [rng.standard_normal((n, dim)).astype(np.float32) * np.float32(0.1) for n in rows]
    chip = f"the chip of {args.config}" if args.config else "the default chip"
    lines = [f"FAE's hot rows on {'the RTL' if rtl else 'the performance model'}: {args.trace}, B = {args.batch_size}, "
             f"T = 1, D = {dim}, {chip} ({params.ranks} rank{'s' if params.ranks > 1 else ''}), a store of {args.beats} beats "
             f"({args.beats * 64 // 1024} KiB, {hot_conf.hot.ways}-way); the hot set profiled on {DEFAULT_SAMPLE:.0%} of "
             f"the inputs of {k} batches, the {args.batches} after them measured.  `python -m refree.verif.bench_hot "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", ""]
    print(lines[0], flush=True)
    totals, jobs = {}, None
    t0 = time.perf_counter()
    for mode in modes:
        tables = [E.copy() for E in start]
        tot = totals[mode] = {"rtl": np.zeros((2, 3), np.int64), "model": np.zeros((2, 3), np.int64)}
        for n, batch in enumerate(batches[k:]):
            lay = layout(batch, tables, stripe=params.mapping.staging_stripe)
            beats, kept = fit_hot_beats(hot.rows, lay, params.mapping.addr_bits, hot_conf.hot)
            left_out = sum(map(len, hot.rows)) - sum(map(len, kept))
            model = (_model_step(batch, lay, mode, limits, params), _model_step(batch, lay, mode, limits, params, beats))
            tot["model"] += model
            if rtl:
                grad = rng.standard_normal((batch.batch_size, dim)).astype(np.float32) * np.float32(0.01)
                without, with_store, new, jobs = _rtl_step(plain, hot_chip, batch, tables, mode, beats, grad,
                                                           f"{mode}, batch {n}")
                tot["rtl"] += (without, with_store)
                tables = [new]
            shown = (without, with_store) if rtl else model
            beside = f"; model {model[0][0]:,} -> {model[1][0]:,}" if rtl else ""
            print(f"  {mode} batch {n + 1}/{args.batches}: {shown[0][0]:,} -> {shown[1][0]:,} cycles, DRAM beats "
                  f"{shown[0][1]:,} -> {shown[1][1]:,}{beside} ({time.perf_counter() - t0:.0f} s)", flush=True)
    measured = "rtl" if rtl else "model"
    ref = totals["baseline" if "baseline" in totals else modes[0]][measured][0][0]
    lines += ["| mode | store | step cycles (sum) | speed-up over `baseline` | DRAM beats (sum) | store hits |"
              + (" model's cycles | model / RTL - 1 |" if rtl else ""),
              "|---|---|---:|---:|---:|---:|" + ("---:|---:|" if rtl else "")]
    errors = []
    for mode in modes:
        for i, store in enumerate(("none", f"{args.beats} beats")):
            cycles, dram, hits = totals[mode][measured][i]
            line = f"| {mode} | {store} | {cycles:,} | {ref / cycles:.2f}x | {dram:,} | {hits:,} |"
            if rtl:
                m = totals[mode]["model"][i][0]
                errors.append(m / cycles - 1)
                line += f" {m:,} | {m / cycles - 1:+.1%} |"
            lines.append(line)
    lines += ["", f"The hot set in the last batch's layout: {len(beats):,} beats loaded ({left_out} profiled rows left "
              f"out: their sets were full).  The profiled hot set's coverage of the measured batches: {rep['after']['hot_lookups'] / max(rep['after']['lookups'], 1):.1%} "
              f"of the lookups, {rep['after']['hot_inputs'] / max(rep['after']['inputs'], 1):.1%} of the inputs."]
    if rtl:
        lines += [f"A load job {jobs[0]:,} cycles, a flush {jobs[1]:,} cycles ({jobs[2]:,} dirty beats), the host's, "
                  f"the last run's: once per stream.  The performance model's step cycles: largest error "
                  f"{max(map(abs, errors)):.1%}."]
    print("\n".join(lines[1:]))
    if args.out:
        with open(args.out, "w") as f:
            f.write("# " + lines[0] + "\n" + "\n".join(lines[1:]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
