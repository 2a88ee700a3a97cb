"""A job's DRAM traffic as the engine asks for it: the beat requests, reads and writes, in the
order the engine's memory port sees them, for :func:`.dram_side.serve` to time.

The order follows the engine's data path (docs/architecture.md, "A job"), a pass at a time:

* every pass first reads the input arrays it walks (offsets, indices, weights; a part reads
  its own beats of them);
* ``baseline`` forward: each lookup's table row, 16 bags interleaved as the lookup buffer
  gives them, and each bag's pooled row once its last lookup is read; backward: per lookup
  in index order (closer to the RTL's clocks than the buffer's order, whose repeated rows
  the row forwarder chains) its bag's gradient row, its table row, and the table row
  written back;
* ``dedup`` and ``refree`` forward, per part: each distinct row at its first lookup (the
  analyzer fetches a row as it discovers it), then the part's pooled rows;
* ``dedup`` and ``refree`` backward, by row groups (:func:`backward_passes`): the dry passes
  over the input, then per group each bag's gradient row at the bag's first lookup of the
  group and each distinct row at its first, then the group's updated rows written.

What it leaves out: Adagrad's state beats, the engine's own limits (how fast it analyses,
folds and updates) and when a request is ready (the requests of a pass are offered as fast
as the port takes them).  So a job's time on :func:`.dram_side.serve` is what the DRAM side
needs for the job's traffic in the engine's order: a lower estimate of the job's cycles
that names the DRAM side's share of them."""
from collections import deque

import numpy as np

from refree.golden.planner import partition, plan_row_groups, row_groups
from refree.hw.engine.staging import staging_beat

__all__ = ["job_requests", "buffer_order", "backward_passes", "row_beats", "staging_row_beats", "LOOKUP_LANES"]

LOOKUP_LANES = 16       # bags the lookup buffer interleaves (hw/engine/lookup_buffer.py)


def _input(batch, lay, bag_lo=None, bag_hi=None, lo=None, hi=None):
    """The input beats a pass (the whole table, or a part's bags and lookups) reads."""
    B = batch.batch_size
    bag_lo, bag_hi = (0, B) if bag_lo is None else (bag_lo, bag_hi)
    lo, hi = (0, len(batch.indices)) if lo is None else (lo, hi)
    out = []
    for name, base, first, last in (("offsets", lay.offsets, bag_lo, bag_hi + 1),
                                    ("indices", lay.indices, lo, hi),
                                    ("per_sample_weights", lay.weights, lo, hi)):
        arr = batch.given(name) if name != "per_sample_weights" or batch.weighted else None
        if arr is None or last <= first:
            continue
        size = arr.dtype.itemsize
        out += [(base + k, False) for k in range(first * size // 64, (last * size + 63) // 64)]
    return out


def row_beats(lay, t, r):
    """The beat addresses of row ``r`` of table ``t``."""
    base, _, stride = lay.tables[t]
    return list(range(base + int(r) * stride, base + int(r) * stride + lay.row_beats))


def staging_row_beats(lay, base, b, t, T):
    """The beat addresses of bag ``b``'s staging row of table ``t`` in the array at ``base``."""
    return [staging_beat(base, int(b) * T + t, j, lay.row_beats, lay.stripe) for j in range(lay.row_beats)]


def _row(lay, t, r, write=False):
    return [(a, write) for a in row_beats(lay, t, r)]


def _staging(lay, base, b, t, T, write=False):
    return [(a, write) for a in staging_row_beats(lay, base, b, t, T)]


def buffer_order(lo, hi, offsets):
    """Lookups [lo, hi) of the bags ``offsets`` delimits, as the lookup buffer replays them
    (hw/engine/lookup_buffer.py): a pointer visits ``LOOKUP_LANES`` lanes in turn; a lane
    holding a bag gives its next lookup, an empty lane takes the next non-empty bag and gives
    its first; lane i takes its first bag in round i."""
    bags = deque(b for b in range(len(offsets) - 1) if offsets[b + 1] > offsets[b])
    lanes = [None] * LOOKUP_LANES           # [next lookup, end] of the bag each holds
    order, visit = [], 0
    while bags or any(lanes):
        i = visit % LOOKUP_LANES
        if lanes[i] is None and bags and visit // LOOKUP_LANES >= i:
            b = bags.popleft()
            lanes[i] = [int(offsets[b]), int(offsets[b + 1])]
        if lanes[i] is not None:
            order.append(lanes[i][0])
            lanes[i][0] += 1
            if lanes[i][0] == lanes[i][1]:
                lanes[i] = None
        visit += 1
    return order


def backward_passes(batch, limits):
    """Backward by rows' passes in the engine's order (hw/engine/engine.py, ``PART_START``):
    ``[(table, G, group, dry)]``: first a dry pass (analysis only) of every row group of
    every table but table 0's first when the batch is one chunk (B <= ``max_bags`` and its
    lookups <= ``max_lookups``: that pass checks itself), then a pass of each."""
    one_chunk = batch.batch_size <= limits.max_bags and len(batch.indices) <= limits.max_lookups
    G = [row_groups(batch, t, limits) for t in range(batch.num_tables)]
    dry = [(t, G[t], g, True) for t in range(batch.num_tables) for g in range(G[t])
           if not (t == 0 and g == 0 and one_chunk)]
    return dry + [(t, G[t], g, False) for t in range(batch.num_tables) for g in range(G[t])]


def job_requests(batch, lay, mode, job, limits, poolings=None):
    """The job's requests ``[(beat, write)]`` (see the module docstring): ``lay`` the memory
    layout (:func:`refree.verif.staging.layout`), ``limits`` the engine's part limits."""
    T, B = batch.num_tables, batch.batch_size
    poolings = poolings or ["sum"] * T
    reqs = []
    if mode == "baseline" or job == "forward":
        for p in partition(batch, limits):
            t = p.table
            offs = np.asarray(batch.offsets[t * B + p.bag_lo: t * B + p.bag_hi + 1], np.int64)
            reqs += _input(batch, lay, t * B + p.bag_lo, t * B + p.bag_hi, p.lo, p.hi)
            bag_of = np.repeat(np.arange(p.bag_lo, p.bag_hi), np.diff(offs))
            if mode == "baseline":
                last = {int(offs[b + 1]) - 1: b for b in range(len(offs) - 1) if offs[b + 1] > offs[b]}
                order = buffer_order(p.lo, p.hi, offs) if job == "forward" else range(p.lo, p.hi)
                for k in order:
                    b = bag_of[k - p.lo]
                    if job == "forward":
                        reqs += _row(lay, t, batch.indices[k])
                        if k in last:
                            reqs += _staging(lay, lay.pooled, b, t, T, True)
                    else:
                        reqs += _staging(lay, lay.grad, b, t, T) + _row(lay, t, batch.indices[k]) \
                            + _row(lay, t, batch.indices[k], True)
            else:
                _, first = np.unique(np.asarray(batch.indices[p.lo:p.hi]), return_index=True)
                for k in np.sort(first):
                    reqs += _row(lay, t, batch.indices[p.lo + k])
                for b in range(p.bag_lo, p.bag_hi):
                    reqs += _staging(lay, lay.pooled, b, t, T, True)
        return reqs
    plans = {}
    for t, G, g, dry in backward_passes(batch, limits):
        reqs += _input(batch, lay, t * B, (t + 1) * B, *_table_lookups(batch, t))
        if dry:
            continue
        if t not in plans:
            plans[t] = {plan.group[1]: plan for plan in plan_row_groups(batch, t, poolings[t], limits)}
        plan = plans[t].get(g)
        if plan is None:
            continue                # (a group without lookups: its pass reads the input only)
        seen_bag, seen_row = set(), set()
        for b, r in zip(plan.occ_bag, plan.occ_row):
            if b not in seen_bag:
                seen_bag.add(b)
                reqs += _staging(lay, lay.grad, b, t, T)
            if r not in seen_row:
                seen_row.add(r)
                reqs += _row(lay, t, r)
        for r in plan.rows:
            reqs += _row(lay, t, r, True)
    return reqs


def _table_lookups(batch, t):
    B = batch.batch_size
    return int(batch.offsets[t * B]), int(batch.offsets[(t + 1) * B])
