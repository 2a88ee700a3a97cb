"""The bounds of a job (docs/design.md section 3, "Bounds of a job"): memory, compute, analysis.

For each job (``forward``, ``backward``) of each mode, three lower bounds in cycles of the
engine's clock; the roofline is the largest, and a run's efficiency is its cycles over the
roofline (:func:`efficiency`).  The bounds take the parts the engine forms (the planner's
:func:`~refree.golden.planner.partition` under the engine's limits), so they count exactly
what the golden counts (:mod:`.counts`) count.  Every rule is stated once, here:

**memory** -- the compulsory DRAM traffic in 64-byte beats, at the ranks' peak: R ranks of
16 bytes a clock each, so a beat costs ``4 / R`` clocks.  Compulsory beats of a job:

* input: each input array read once, each from a beat boundary: offsets ``(T*B+1)`` and
  indices ``N``, int64 or int32 as the batch gives them (``Batch.array_beats``), and when
  the batch is weighted its weights ``N`` float32, each ``ceil(bytes / 64)`` beats.  Both jobs need all of them (the backward job re-forms the
  parts, and every mode's backward applies the weights);
* forward, ``table_reads``: each table row the mode must read, once per part (a row is
  ``D/16`` beats): ``baseline`` one row per lookup (PyTorch's order), ``dedup`` and
  ``refree`` the distinct rows of each part; ``pooled_writes``: each pooled row once,
  ``B*T`` rows;
* backward, ``grad_reads``: each upstream gradient row as the mode requires it
  (``baseline``: one per lookup; ``dedup``, ``refree``: each non-empty bag once);
  ``table_reads`` and ``table_writes``: each row the update read-modify-writes, read once
  and written once (``baseline``: per lookup; ``dedup``, ``refree``: each distinct row of
  the batch once, backward by rows); row-wise Adagrad: one state beat read and one written
  per updated row (``state_reads``, ``state_writes``: what the engine moves, the golden
  update count).

Traffic beyond these beats (a second pass over the input, a row fetched twice; backward
by rows: the input read once per row group and once more per group checked before the
first write, a bag's gradient row once per group it touches) counts against the engine,
not into the bound: the counters' moved beats are reported apart.

**compute** -- the vector operations of the mode's schedule x D / the lanes of the unit that
performs them; the bound is the largest over the job's units:

* ``fold`` (the fold datapath, ``fold_lanes`` lanes: 16 by this function's default, a 64-byte
  beat a cycle; the engine's default is 64, a row of D = 64 a cycle): every
  operation the scheduler issues, those whose addend is the initial +0 included -- forward:
  one per lookup in ``baseline`` and ``dedup``, one per forward-trie node (the root
  excluded) in ``refree``; backward merges: none in ``baseline``, one per lookup in
  ``dedup``, one per backward-trie node of each row group in ``refree``;
* ``divider`` (forward, mean-pooled tables): ``fl(acc / len)`` per element of every
  non-empty mean-pooled bag, on ``div_lanes`` dividers;
* ``updater`` (backward, SGD; 16 lanes, a beat a cycle): each read-modify-written row;
* ``adagrad`` (backward, row-wise Adagrad, in place of the updater): each updated row on
  the Adagrad unit's ``adagrad_lanes`` (P) FMA lanes, ``D / min(P, 8) + D / P`` cycles a row
  (the squares, eight chains wide at most, and the update: ``2 * D / P`` for P <= 8; the
  row's scalars -- the tree of the strided sums, the division, the square root -- run in a
  pipeline of their own, a row a cycle, and are excluded).

**analysis** -- lookups / the analyzer's rate (``analyzer_rate``, 1 lookup a cycle), in every
mode and both jobs: the engine's analyzer forms the parts in every mode.
"""
import numpy as np

from .counts import MODES
from .planner import partition, plan_part, plan_row_groups

__all__ = ["JOBS", "BOUNDS", "BEAT_KINDS", "BEAT_BYTES", "RANK_BYTES_PER_CLOCK", "step_bounds", "job_bounds",
           "efficiency", "input_beats"]

JOBS = ("forward", "backward")
BOUNDS = ("memory", "compute", "analysis")
#: the kinds of compulsory beats, named as the engine's counters of the same traffic
BEAT_KINDS = ("input_reads", "table_reads", "table_writes", "grad_reads", "pooled_writes", "state_reads",
              "state_writes")
BEAT_BYTES = 64
#: one DDR4 rank's data bus at its peak: a BL8 burst of 64 bytes every 4 clocks
RANK_BYTES_PER_CLOCK = 16
LANES_PER_BEAT = BEAT_BYTES // 4


def _beats(nbytes):
    return -(-int(nbytes) // BEAT_BYTES)


def input_beats(batch):
    """Beats of the input arrays, each read once from a beat boundary."""
    return sum(batch.array_beats(name) for name in ("offsets", "indices", "per_sample_weights")
               if getattr(batch, name) is not None)


def _part_ops(plan):
    """What the bounds need of one part: lookups, distinct rows, non-empty bags, trie nodes,
    mean-pooled non-empty bags."""
    nonempty = plan.grad_rows
    return {"lookups": len(plan.occ_row), "distinct": len(plan.rows), "nonempty": nonempty,
            "fwd_nodes": plan.fwd_trie.num_nodes, "bwd_nodes": plan.bwd_trie.num_nodes,
            "mean_bags": nonempty if plan.pooling == "mean" else 0}


def _job(beats, units, lookups, beat_cycles, analyzer_rate):
    beats = {k: int(beats.get(k, 0)) for k in BEAT_KINDS}
    beats["total"] = sum(beats.values())
    bounds = {"memory": beats["total"] * beat_cycles, "compute": max(units.values(), default=0),
              "analysis": lookups / analyzer_rate}
    limit = max(BOUNDS, key=lambda k: bounds[k])        # (the first of equals, in BOUNDS order)
    return {"beats": beats, "units": units, **bounds, "roofline": bounds[limit], "limit": limit}


def step_bounds(batch, poolings, limits, dim, ranks=1, optimizer="sgd", modes=MODES, *, fold_lanes=16,
                updater_lanes=16, adagrad_lanes=4, div_lanes=4, analyzer_rate=1, beats_per_cycle=None):
    """The bounds of both jobs of each mode: ``{mode: {"forward": b, "backward": b}}``.

    Each ``b`` is a dict: ``beats`` (compulsory beats per kind of :data:`BEAT_KINDS`, and
    ``total``), ``units`` (cycles per compute unit), ``memory``, ``compute``, ``analysis``,
    ``roofline`` (cycles) and ``limit`` (which bound is the roofline).  ``poolings``: one per
    table; ``limits``: the engine's :class:`~refree.golden.planner.PartLimits`
    (``refree.verif.engine_run.limits_of``); ``dim``: D as the engine holds it (rows of
    ``D/16`` beats); ``ranks``: R, the memory's peak being ``R * 16 / 64`` beats a clock
    unless ``beats_per_cycle`` gives another peak (a generic port).  Row-wise Adagrad has no
    ``baseline`` (it is left out of the result).  The rules are those of the module's
    docstring (docs/design.md section 3)."""
    if dim < 1 or dim % LANES_PER_BEAT:
        raise ValueError(f"dim must be a positive multiple of {LANES_PER_BEAT} (whole beats), not {dim}")
    if beats_per_cycle is None and (isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1):
        raise ValueError(f"ranks must be a positive integer, not {ranks!r}")
    adagrad = optimizer == "rowwise-adagrad"
    peak = beats_per_cycle if beats_per_cycle is not None else ranks * RANK_BYTES_PER_CLOCK / BEAT_BYTES
    beat_cycles = 1 / peak
    row = dim // LANES_PER_BEAT
    B, T = batch.batch_size, batch.num_tables
    n_in = input_beats(batch)
    keys = ("lookups", "distinct", "nonempty", "fwd_nodes", "bwd_nodes", "mean_bags")
    parts = [_part_ops(plan_part(batch, p, poolings[p.table])) for p in partition(batch, limits)]
    tot = {k: sum(p[k] for p in parts) for k in keys}
    # backward by rows (dedup, refree): the row groups' plans; each gradient row once
    groups = ([_part_ops(plan) for t in range(T) for plan in plan_row_groups(batch, t, poolings[t], limits)]
              if set(modes) - {"baseline"} else [])
    by_rows = {k: sum(p[k] for p in groups) for k in keys}
    by_rows["nonempty"] = sum(int((np.diff(batch.table_slice(t)[1]) > 0).sum()) for t in range(T))
    N = tot["lookups"]
    out = {}
    for mode in modes:
        if adagrad and mode == "baseline":
            continue
        if mode == "baseline":
            fwd_rows, grad_rows, rmw, fwd_ops, merge_ops = N, N, N, N, 0
        elif mode == "dedup":
            fwd_rows, grad_rows, rmw, fwd_ops, merge_ops = tot["distinct"], by_rows["nonempty"], by_rows["distinct"], N, N
        elif mode == "refree":
            fwd_rows, grad_rows, rmw = tot["distinct"], by_rows["nonempty"], by_rows["distinct"]
            fwd_ops, merge_ops = tot["fwd_nodes"], by_rows["bwd_nodes"]
        else:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        fwd_units = {"fold": fwd_ops * dim / fold_lanes}
        if tot["mean_bags"]:
            fwd_units["divider"] = tot["mean_bags"] * dim / div_lanes
        bwd_units = {"fold": merge_ops * dim / fold_lanes}
        if adagrad:
            bwd_units["adagrad"] = rmw * (dim / min(adagrad_lanes, 8) + dim / adagrad_lanes)
        else:
            bwd_units["updater"] = rmw * dim / updater_lanes
        out[mode] = {
            "forward": _job({"input_reads": n_in, "table_reads": fwd_rows * row, "pooled_writes": B * T * row},
                            fwd_units, N, beat_cycles, analyzer_rate),
            "backward": _job({"input_reads": n_in, "grad_reads": grad_rows * row, "table_reads": rmw * row,
                              "table_writes": rmw * row, "state_reads": rmw if adagrad else 0,
                              "state_writes": rmw if adagrad else 0},
                             bwd_units, N, beat_cycles, analyzer_rate)}
    return out


def job_bounds(batch, poolings, limits, mode, job, dim, ranks=1, optimizer="sgd", **rates):
    """The bounds of one job of one mode (see :func:`step_bounds`)."""
    if job not in JOBS:
        raise ValueError(f"job must be one of {JOBS}, not {job!r}")
    if mode == "baseline" and optimizer == "rowwise-adagrad":
        raise ValueError("row-wise Adagrad has no baseline mode (docs/design.md section 2)")
    return step_bounds(batch, poolings, limits, dim, ranks, optimizer, (mode,), **rates)[mode][job]


def efficiency(cycles, bounds):
    """cycles / roofline (1.0 is a job at its roofline; 0.0 for an empty roofline)."""
    return cycles / bounds["roofline"] if bounds["roofline"] else 0.0
