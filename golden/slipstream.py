"""Skipping stale updates (Slipstream, docs/design.md section 6), in the golden model.

Slipstream skips the updates of hot rows that have stopped changing.  Unlike the modes it
changes the trained model, so its value is a trade (``refree train --skip``, the report in
``reports/slipstream``).  The rules, each with its parameter:

* **Candidates**: the hot rows, FAE's hot set (:mod:`.hot_rows`) profiled on a sample of the
  training inputs before skipping begins; a cold row is always updated.
* **Snapshot and window** (``window`` W batches, default 50: about 6,400 samples at B = 128,
  a tenth of a MovieLens epoch, so that a row's change over a window is measured on enough
  of its updates): at the start of every window the hot rows' values are kept (the
  snapshot); at its end each hot row's change since the snapshot, the L-infinity norm of the
  difference, is measured.  A row whose change stayed below the threshold T is *stale* for
  the next window: its updates are skipped (no merge, no write: the row keeps its value);
  the others are updated.  A stale row keeps no change, so it stays stale (Slipstream's
  premise: such a row has converged); a row not looked up in a window keeps its state.
  The stale set only grows, so the fraction of updates skipped over a run grows past the
  target as more rows settle.
* **Threshold** (T): found at the end of the first window, which skips nothing, by a binary
  search over a sample of the hot rows (``sample``, default 0.25 of them, seeded), for the
  T at which the sampled rows' updates in that window that would have been skipped make
  ``target`` of them (the skip fraction asked for), each row weighted by its updates.
  Fixed thereafter.
* **Inputs**: none is dropped (Slipstream's input classifier is not modelled).

Values of the rows that are updated are exactly the step's: rows are updated independently
(backward by rows), so skipping one changes no other.
"""
import numpy as np

from .hot_rows import count_accesses, hot_set, sample_inputs

__all__ = ["Slipstream", "search_threshold", "DEFAULT_WINDOW", "DEFAULT_SAMPLE_ROWS"]

DEFAULT_WINDOW = 50
DEFAULT_SAMPLE_ROWS = 0.25


def search_threshold(changes, weights, target, iterations=40):
    """The T whose rows with ``changes < T`` carry ``target`` of ``weights`` (binary search
    over [0, max change]); 0 for a target of 0."""
    changes, weights = np.asarray(changes, np.float64), np.asarray(weights, np.float64)
    if not 0 <= target < 1:
        raise ValueError(f"the skip target must be in [0, 1), not {target!r}")
    total = weights.sum()
    if target == 0 or total == 0:
        return 0.0
    lo, hi = 0.0, float(changes.max()) * (1 + 1e-9) + 1e-30
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if weights[changes < mid].sum() / total < target:
            lo = mid
        else:
            hi = mid
    return hi


class Slipstream:
    """The stale set of a training run (see the module docstring).

    ``profile_batches``: the batches the hot set is profiled on (a ``fraction`` of their
    inputs, FAE's); ``num_rows``, ``dim``, ``budget_bytes``: the tables and the hot set's
    size; ``target``: the skip fraction asked for; ``window``, ``sample``, ``seed``."""

    def __init__(self, profile_batches, num_rows, dim, target, *, window=DEFAULT_WINDOW, sample=DEFAULT_SAMPLE_ROWS,
                 fraction=0.05, budget_bytes=256 * 1024, seed=0):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"the window must be a positive number of batches, not {window!r}")
        if not 0 < sample <= 1:
            raise ValueError(f"the row sample must be in (0, 1], not {sample!r}")
        if not 0 <= target < 1:
            raise ValueError(f"the skip target must be in [0, 1), not {target!r}")
        counts = count_accesses(profile_batches, sample_inputs(profile_batches, fraction, seed), num_rows)
        self.hot = hot_set(counts, budget_bytes, dim).rows
        self.target, self.window, self.sample, self.seed = target, window, sample, seed
        self.threshold = None               # found at the first window's end
        self.stale = [np.zeros(len(r), bool) for r in self.hot]
        self.snapshot = None
        self.updates = [np.zeros(len(r), np.int64) for r in self.hot]     # this window's, per hot row
        self.steps = 0
        self.skipped = self.updated = 0     # row updates over the run (hot and cold)
        self.hot_updates = 0                # of them, the hot rows' (the candidates)

    def begin(self, tables):
        self.snapshot = [E[r].copy() for E, r in zip(tables, self.hot)]

    def count_updates(self, batch):
        """Count each distinct row's update of ``batch`` (backward by rows: one a batch) as
        updated or skipped; return, per table, the distinct rows whose updates are skipped."""
        out = []
        for t, rows in enumerate(self.hot):
            idx = np.unique(batch.table_slice(t)[0])
            pos = np.searchsorted(rows, idx)
            hot = (pos < len(rows)) & (rows[np.minimum(pos, len(rows) - 1)] == idx)
            np.add.at(self.updates[t], pos[hot], 1)
            self.hot_updates += int(hot.sum())
            stale = np.zeros(len(idx), bool)
            stale[hot] = self.stale[t][pos[hot]]
            out.append(idx[stale])
            self.skipped += int(stale.sum())
            self.updated += int((~stale).sum())
        return out

    def stale_rows(self, num_rows):
        """Per table (of ``num_rows`` rows), a boolean per row: the rows whose updates are
        skipped now (the golden step's ``stale``)."""
        out = []
        for rows, st, n in zip(self.hot, self.stale, num_rows):
            mask = np.zeros(n, bool)
            mask[rows[st]] = True
            out.append(mask)
        return out

    def end_step(self, tables):
        """After a step: at a window's end, decide the next window's stale set."""
        self.steps += 1
        if self.steps % self.window:
            return
        # (in float64, as T is: compared in float32, a T just above a change could round onto it)
        change = [np.abs(E[r] - s).max(axis=1).astype(np.float64) if len(r) else np.zeros(0) for E, r, s in
                  zip(tables, self.hot, self.snapshot)]
        if self.threshold is None:
            rng = np.random.default_rng(self.seed)
            c, w = np.concatenate(change), np.concatenate(self.updates)
            pick = rng.random(len(c)) < self.sample
            self.threshold = search_threshold(c[pick], w[pick], self.target)
        # (a row looked up in the window whose change stayed below T; a stale row stays so)
        self.stale = [st | (ch < self.threshold) & (u > 0) for ch, u, st in zip(change, self.updates, self.stale)]
        self.updates = [np.zeros(len(r), np.int64) for r in self.hot]
        self.begin(tables)

    def report(self, dim):
        """Row updates skipped, their fraction, and the DRAM beats they would have moved (each
        a read and a write of D/16 beats)."""
        total = self.skipped + self.updated
        return {"threshold": self.threshold, "hot_rows": int(sum(len(r) for r in self.hot)),
                "window": self.window, "target": self.target, "skipped_updates": self.skipped,
                "row_updates": total, "skip_fraction": self.skipped / total if total else 0.0,
                "hot_updates": self.hot_updates,
                "hot_skip_fraction": self.skipped / self.hot_updates if self.hot_updates else 0.0,
                "beats_saved": 2 * (-(-dim // 16)) * self.skipped}
