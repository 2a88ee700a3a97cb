"""FAE's profiler: the hot rows of a stream of batches, found on a sample of its inputs.

FAE (Adnan et al., PVLDB 2022; github STAR-Laboratory/Accelerating-RecSys-Training) keeps
the most-accessed embedding rows in fast memory across batches.  Its profiler samples a
fraction of the training inputs uniformly (5 % by default), counts the accesses of every
(table, row), and takes the most-counted rows that fit a byte budget (``budget / (4·D)``
rows) as the hot set; an input is hot when all its lookups are hot rows
(docs/design.md section 6).  Here the fast memory is SRAM in the buffer chip, so the
default budget is 256 KiB (the size of the engine's row store at its default limits: 1,024
rows of D = 64), not FAE's 256 MB of GPU memory.

An *input* is one sample: bag ``b`` of every table of a batch.  The profile is taken on
``profile_batches`` earlier batches of a stream and judged on the batches after them (the
hot set's hit rate on inputs it never saw), as training would use it.

Ties among equally counted rows go to the lower table, then the lower row (a deterministic
rule; FAE's order among ties is its sort's).  Sampling uses ``numpy``'s generator of
``seed`` (without replacement, at least one input).

The DRAM traffic of the table rows with and without a hot-row store holding the hot set
(:func:`table_traffic`), by the design's rule (docs/design.md section 6): a hot row lives in
SRAM for the whole stream, so its reads and its updates (write-back) touch no DRAM; a load
job reads every hot row once before the stream, a flush job writes back once every hot row
that was updated.  The rows each mode touches are those the golden model counts: forward,
``baseline`` one row read per lookup, ``dedup`` and ``refree`` each distinct row of each
part; backward (SGD), ``baseline`` one read-modify-write per lookup, the sharing modes one
per distinct row of the batch (backward by rows).  Values do not change with the store, only
where a row lives; optimizer state and the input arrays are left out (unchanged by it).

The store itself is in the buffer chip (``hw/lrdimm/hot_row_store.py``, ``[hot]`` in the
configuration); its hits on the RTL equal :func:`table_traffic`'s (``tests/test_lrdimm_hot.py``)
and ``python -m refree.verif.bench_hot`` measures its cycles on a stream of batches.
"""
from dataclasses import dataclass

import numpy as np

from .counts import MODES
from .errors import BatchError
from .planner import partition

__all__ = ["DEFAULT_SAMPLE", "DEFAULT_BUDGET", "HotSet", "sample_inputs", "count_accesses", "hot_set",
           "coverage", "profile", "touched_rows", "table_traffic"]

DEFAULT_SAMPLE = 0.05           # FAE's: 5 % of the inputs
DEFAULT_BUDGET = 256 * 1024     # bytes: the row store's size at the default limits (FAE's 256 MB: a GPU's)


@dataclass(frozen=True)
class HotSet:
    """The hot rows of each table (sorted ascending), and what chose them."""
    rows: tuple[np.ndarray, ...]
    budget_bytes: int
    dim: int

    @property
    def capacity(self):
        """Rows the budget holds: ``budget / (4·D)``."""
        return self.budget_bytes // (4 * self.dim)

    def contains(self, t, rows):
        """Boolean mask: which of ``rows`` of table ``t`` are hot."""
        hot = self.rows[t]
        at = np.searchsorted(hot, rows)
        return (at < len(hot)) & (hot[np.minimum(at, len(hot) - 1)] == rows) if len(hot) else \
            np.zeros(len(rows), bool)


def _check(fraction, budget_bytes, dim):
    if not 0 < fraction <= 1:
        raise BatchError("sample", f"must be a fraction in (0, 1], not {fraction!r}")
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, np.integer)) or budget_bytes < 0:
        raise BatchError("budget", f"must be a number of bytes >= 0, not {budget_bytes!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise BatchError("dim", f"must be a positive integer, not {dim!r}")


def sample_inputs(batches, fraction, seed=0):
    """The sampled inputs of a stream of batches: ``[(batch number, sample)]``, a uniform
    draw without replacement of ``ceil(fraction * inputs)`` of them (at least one)."""
    sizes = [b.batch_size for b in batches]
    total = sum(sizes)
    n = max(1, int(np.ceil(round(fraction * total, 9))))     # (0.07 * 100 is 7.000000000000001)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    starts = np.cumsum([0] + sizes)
    which = np.searchsorted(starts, picked, side="right") - 1
    return [(int(k), int(p - starts[k])) for k, p in zip(which, picked)]


def _input_rows(batch, t, samples):
    """Table t's lookups of the given samples, concatenated."""
    B = batch.batch_size
    lo, hi = batch.offsets[t * B + samples], batch.offsets[t * B + samples + 1]
    return np.concatenate([batch.indices[a:b] for a, b in zip(lo, hi)]) if len(samples) else \
        np.zeros(0, np.int64)


def count_accesses(batches, sampled, num_rows):
    """Accesses of every row of every table by the sampled inputs: a count array per table."""
    T = len(num_rows)
    counts = [np.zeros(n, np.int64) for n in num_rows]
    by_batch = {}
    for k, s in sampled:
        by_batch.setdefault(k, []).append(s)
    for k, samples in by_batch.items():
        for t in range(T):
            counts[t] += np.bincount(_input_rows(batches[k], t, np.array(samples)), minlength=num_rows[t])
    return counts


def hot_set(counts, budget_bytes, dim):
    """The most-counted rows (counted at least once) that fit ``budget_bytes`` of rows of D
    floats, over all tables together; ties to the lower table, then row."""
    cap = budget_bytes // (4 * dim)
    rows = [np.nonzero(cnt)[0] for cnt in counts]
    table = np.concatenate([np.full(len(r), t, np.int64) for t, r in enumerate(rows)])
    row = np.concatenate(rows).astype(np.int64)
    count = np.concatenate([cnt[r] for cnt, r in zip(counts, rows)])
    take = np.lexsort((row, table, -count))[:cap]
    return HotSet(tuple(np.sort(row[take][table[take] == t]) for t in range(len(counts))), budget_bytes, dim)


def coverage(batches, hot):
    """How the hot set covers a stream: the hot fraction of lookups and of inputs (an input
    hot when every lookup of every table is hot), and the counts behind them."""
    lookups = hot_lookups = inputs = hot_inputs = 0
    for batch in batches:
        B, T = batch.batch_size, batch.num_tables
        cold_input = np.zeros(B, bool)
        for t in range(T):
            idx, offs, _ = batch.table_slice(t)
            is_hot = hot.contains(t, idx)
            lookups += len(idx)
            hot_lookups += int(is_hot.sum())
            bag_of = np.repeat(np.arange(B), np.diff(offs))
            cold_input |= np.bincount(bag_of[~is_hot], minlength=B) > 0
        inputs += B
        hot_inputs += int((~cold_input).sum())
    return {"lookups": lookups, "hot_lookups": hot_lookups, "inputs": inputs, "hot_inputs": hot_inputs,
            "hot_lookup_fraction": hot_lookups / lookups if lookups else 0.0,
            "hot_input_fraction": hot_inputs / inputs if inputs else 0.0}


def profile(batches, num_rows, profile_batches, fraction=DEFAULT_SAMPLE, budget_bytes=DEFAULT_BUDGET, dim=64,
            seed=0):
    """FAE's profile of ``batches[:profile_batches]`` (a ``fraction`` of their inputs), judged
    on every batch after them (at least one); returns ``(hot set, report)``."""
    _check(fraction, budget_bytes, dim)
    if isinstance(profile_batches, bool) or not 1 <= profile_batches < len(batches):
        raise BatchError("profile batches", f"must be 1 to {len(batches) - 1} of the {len(batches)} batches "
                                            f"(the later ones judge the hot set), not {profile_batches!r}")
    earlier, later = batches[:profile_batches], batches[profile_batches:]
    sampled = sample_inputs(earlier, fraction, seed)
    counts = count_accesses(earlier, sampled, num_rows)
    hot = hot_set(counts, budget_bytes, dim)
    report = {"sampled_inputs": len(sampled), "profiled_inputs": sum(b.batch_size for b in earlier),
              "sample": fraction, "budget_bytes": budget_bytes, "dim": dim, "capacity_rows": hot.capacity,
              "hot_rows": [len(r) for r in hot.rows], "profiled": coverage(earlier, hot),
              "after": coverage(later, hot)}
    return hot, report


def touched_rows(batch, mode, limits):
    """Per table, ``(rows read forward, rows read-modify-written backward)``, one entry per
    access, as the golden model counts them (module docstring)."""
    if mode not in MODES:
        raise BatchError("mode", f"must be one of {MODES}, not {mode!r}")
    parts = partition(batch, limits) if mode != "baseline" else []
    out = []
    for t in range(batch.num_tables):
        idx = batch.table_slice(t)[0]
        if mode == "baseline":
            out.append((idx, idx))
            continue
        fwd = [np.unique(batch.indices[p.lo:p.hi]) for p in parts if p.table == t]
        out.append((np.concatenate(fwd or [np.zeros(0, np.int64)]), np.unique(idx)))
    return out


def table_traffic(batches, hot, mode, limits):
    """Table-row accesses of a stream in ``mode``, in rows: ``dram`` without the store;
    with it, ``dram_hot`` (cold rows' reads and writes, plus the load and the flush),
    ``hits`` (accesses served by the store), ``load`` and ``flush`` rows."""
    dram = dram_hot = hits = 0
    updated = [set() for _ in hot.rows]
    for n, batch in enumerate(batches):
        try:
            touched = touched_rows(batch, mode, limits)
        except BatchError as e:
            raise BatchError(e.field, f"{e.message} (batch {n} of the {len(batches)})", e.code) from None
        for t, (fwd, rmw) in enumerate(touched):
            fwd_hot, rmw_hot = hot.contains(t, fwd), hot.contains(t, rmw)
            dram += len(fwd) + 2 * len(rmw)
            dram_hot += int((~fwd_hot).sum()) + 2 * int((~rmw_hot).sum())
            hits += int(fwd_hot.sum()) + 2 * int(rmw_hot.sum())
            updated[t].update(int(r) for r in rmw[rmw_hot])
    load, flush = sum(len(r) for r in hot.rows), sum(len(u) for u in updated)
    return {"dram": dram, "dram_hot": dram_hot + load + flush, "hits": hits, "load": load, "flush": flush}

