"""Schedule-exact replay of an embedding training step (docs/design.md section 2).

`step` runs forward over every part of every table, then backward and the optimizer update
(by rows, see below; `baseline` part by part), in one of the modes `baseline`, `dedup`,
`refree`.  All
arithmetic is binary32 in the exact order of the design, so the RTL must match it bit for
bit.

Backward by rows (``backward="rows"``, docs/design.md section 2, "Batches larger than the
buffers") merges each distinct row of a table over every occurrence in the whole batch and
updates it once, whatever the parts; row-wise Adagrad then takes batches of any size.  A
table's rows are split into row groups (``planner.row_group_of``: for G = 2**b groups, the
XOR of the row's b-bit digits; ``planner.row_groups``:
G the smallest power of two whose groups fit a part's distinct rows, or the host's G), and
each group is a plan of its own over every bag.  The values do not depend on G: a row's
merge runs over its occurrences in index order in `dedup`, and in `refree` over its keys
in bag order (the order in which a group's pass streams the gradient rows); G decides
only the counts (a bag's gradient row is read once per group it touches, and `refree`
shares prefixes within a group).  `baseline` updates per occurrence in index order, which
is the same by rows or by parts; it runs on the forward parts.  By rows is the default and
the engine's; ``backward="parts"`` keeps the earlier rule (a row updated once per forward
part, row-wise Adagrad refused beyond one part) as a reference of the golden model alone.
"""
from dataclasses import dataclass, field

import numpy as np

from .arith import fma, canonical_nan
from .batch import POOLINGS
from .counts import MODES, count_part, add_counts, zero_counts
from .errors import BatchError, ErrorCode
from .planner import PartLimits, partition, plan_part, plan_row_groups, row_groups
from .replay import fold_rows, replay_tries

__all__ = ["OPTIMIZERS", "BACKWARDS", "StepResult", "check_tables", "check_step_inputs", "initial_state",
           "plan_batch", "forward", "row_group_plans", "backward_update", "step_counts", "step"]

OPTIMIZERS = ("sgd", "rowwise-adagrad")
BACKWARDS = ("rows", "parts")    # backward and update by rows (the engine's), or by forward parts
ADAGRAD_STRIDE = 8      # strided partial sums of squares, combined by a fixed tree


@dataclass
class StepResult:
    pooled: np.ndarray                  # (B, T*D) float32
    tables: list                        # updated tables, float32 (rows, D)
    state: list | None                  # Adagrad state per table, float32 (rows,)
    counts: dict                        # total counts
    table_counts: list = field(default_factory=list)
    row_groups: list | None = None      # backward by rows: G per table (None: by parts, or baseline)


def check_tables(tables, batch, poolings):
    """Validate tables (float32, 2-D, one shared D) against the batch; errors name the field."""
    if len(tables) == 0:
        raise BatchError("tables", "at least one table is needed")
    for t, E in enumerate(tables):
        if not isinstance(E, np.ndarray) or E.dtype != np.float32 or E.ndim != 2:
            raise BatchError(f"table_{t}", "must be a 2-D float32 array, not "
                             f"{getattr(E, 'dtype', type(E).__name__)} of shape {getattr(E, 'shape', None)}")
        if E.shape[1] != tables[0].shape[1] or E.shape[1] < 1:
            raise BatchError(f"table_{t}", f"has vector length {E.shape[1]}, but every table must "
                             f"share table_0's {tables[0].shape[1]}")
    batch.check_against([E.shape[0] for E in tables], poolings)


def plan_batch(batch, poolings, limits):
    return [plan_part(batch, p, poolings[p.table]) for p in partition(batch, limits)]


def _pool(acc, plan):
    if plan.pooling == "mean":
        n = plan.bag_len
        acc[n > 0] = acc[n > 0] / n[n > 0, None].astype(np.float32)
    return acc


def _concat(arrays, dtype, width=None):
    return np.concatenate([np.zeros((0,) if width is None else (0, width), dtype)] + list(arrays))


def _concat_folds(S, segs, srcs, coefs, sizes):
    """One :func:`fold_rows` over independent folds: fold i (segments ``segs[i]`` below
    ``sizes[i]``, sources ``srcs[i]`` in S, coefficients ``coefs[i]`` or None) with its
    segments past the earlier folds'.  Returns each fold's acc."""
    base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    seg = _concat((s + b for s, b in zip(segs, base)), np.int64)
    acc = fold_rows(np.zeros((int(base[-1]), S.shape[1]), np.float32), seg, _concat(srcs, np.int64), S,
                    None if coefs is None else _concat(coefs, np.float32))
    return [acc[lo:hi] for lo, hi in zip(base[:-1], base[1:])]


def _forward_table(E, plans, mode):
    """Each plan's bag sums (before pooling): the plans of one table read the same rows and
    are independent, so each fold step of every part is one operation."""
    if mode == "refree":            # each trie node once
        Vs = replay_tries([p.fwd_trie for p in plans], [p.fkey_c for p in plans],
                          [p.rows[p.fkey_row] for p in plans], E)
        return [V[p.fwd_trie.owner_node] for V, p in zip(Vs, plans)]
    # baseline: index order; dedup: row-stream order, index order within a row
    orders = [slice(None) if mode == "baseline" else np.argsort(p.occ_stream_pos, kind="stable") for p in plans]
    weighted = bool(plans) and plans[0].weighted
    return _concat_folds(E, [p.occ_bag[o] for p, o in zip(plans, orders)],
                         [p.occ_row[o] for p, o in zip(plans, orders)],
                         [p.occ_w[o] for p, o in zip(plans, orders)] if weighted else None,
                         [p.num_bags for p in plans])


def _occurrence_terms(G, plan):
    """fl(coef * G[b]) per occurrence: coef = 1 (sum), w (weighted), fl(1/len) (mean)."""
    Gb = G[plan.occ_bag]
    if plan.pooling == "mean":
        inv = np.float32(1) / np.maximum(plan.bag_len, 1).astype(np.float32)
        return (inv[plan.occ_bag, None] * Gb).astype(np.float32)
    if plan.weighted:
        return (plan.occ_w[:, None] * Gb).astype(np.float32)
    return Gb


def _adagrad(E, state, rows, g, lr, eps):
    D = g.shape[1]
    s = np.zeros((len(rows), ADAGRAD_STRIDE), np.float32)
    for d in range(D):
        s[:, d % ADAGRAD_STRIDE] = fma(g[:, d], g[:, d], s[:, d % ADAGRAD_STRIDE])
    total = ((s[:, 0] + s[:, 1]) + (s[:, 2] + s[:, 3])) + ((s[:, 4] + s[:, 5]) + (s[:, 6] + s[:, 7]))
    state[rows] = state[rows] + total / np.float32(D)
    m = lr / (np.sqrt(state[rows]) + eps)
    E[rows] = fma(-m[:, None], g, E[rows])


def _merged_gradients(Gt, plans, mode):
    """Each plan's merged gradient per row of ``plan.rows`` (``dedup``, ``refree``), from the
    table's gradient rows ``Gt``: it reads the gradient only, so every plan's at once."""
    if mode == "refree":
        Vs = replay_tries([p.bwd_trie for p in plans], [p.bkey_c for p in plans],
                          [p.bkey_bag + p.part.bag_lo for p in plans], Gt)
        return [V[p.bwd_trie.owner_node] for V, p in zip(Vs, plans)]
    terms = _concat((_occurrence_terms(Gt[p.part.bag_lo:p.part.bag_hi], p) for p in plans), np.float32, Gt.shape[1])
    offset = np.cumsum([0] + [len(p.occ_row) for p in plans])      # of each plan's terms
    return _concat_folds(terms, [p.occ_stream_pos for p in plans],
                         [np.arange(len(p.occ_row)) + o for p, o in zip(plans, offset)], None,
                         [len(p.rows) for p in plans])


def _backward_update_table(E, state, Gt, plans, mode, optimizer, lr, eps):
    """Backward and the update of one table's plans, in plan order."""
    if mode == "baseline":          # one read-modify-write per occurrence, index order, part by part
        terms = _concat((_occurrence_terms(Gt[p.part.bag_lo:p.part.bag_hi], p) for p in plans), np.float32,
                        Gt.shape[1])
        rows = _concat((p.occ_row for p in plans), np.int64)
        fold_rows(E, rows, np.arange(len(rows)), terms, np.full(len(rows), -lr, np.float32))
        return
    for plan, g in zip(plans, _merged_gradients(Gt, plans, mode)):
        if optimizer == "sgd":
            E[plan.rows] = fma(-lr, g, E[plan.rows])
        else:
            _adagrad(E, state, plan.rows, g, lr, eps)


def _check_args(mode, optimizer, lr, eps, backward="parts"):
    if backward not in BACKWARDS:
        raise BatchError("backward", f"must be one of {BACKWARDS}, not {backward!r}")
    if mode not in MODES:
        raise BatchError("mode", f"must be one of {MODES}, not {mode!r}")
    if optimizer not in OPTIMIZERS:
        raise BatchError("optimizer", f"must be one of {OPTIMIZERS}, not {optimizer!r}")
    if mode == "baseline" and optimizer != "sgd":
        raise BatchError("optimizer", f"{optimizer!r} needs mode dedup or refree: baseline applies "
                         "updates per occurrence, which only SGD allows", ErrorCode.ADAGRAD_IN_BASELINE)
    for name, v in (("lr", lr), ("eps", eps)):
        if not np.isfinite(np.float32(v)):
            raise BatchError(name, f"must be a finite number, not {v!r}")


def forward(tables, batch, poolings, mode, plans):
    """Pooled outputs (B, T*D) of every part, as the mode computes them."""
    B, D = batch.batch_size, tables[0].shape[1]
    pooled = np.zeros((B, batch.num_tables * D), np.float32)
    for t in range(batch.num_tables):
        tplans = [p for p in plans if p.part.table == t]
        for plan, acc in zip(tplans, _forward_table(tables[t], tplans, mode)):
            p = plan.part
            pooled[p.bag_lo:p.bag_hi, t * D:(t + 1) * D] = _pool(acc, plan)
    return pooled


def row_group_plans(batch, poolings, limits, groups=None, stale=None):
    """The plans of backward by rows, table by table, group by group: ``groups`` is G per
    table (default: the fewest that fit, ``planner.row_groups``); ``stale``: per table, the
    rows whose updates are skipped (a boolean per row), or None."""
    T = batch.num_tables
    if groups is not None and len(groups) != T:
        raise BatchError("groups", f"needs one G per table ({T}), not {len(groups)}")
    return [plan for t in range(T)
            for plan in plan_row_groups(batch, t, poolings[t], limits, None if groups is None else groups[t],
                                        None if stale is None else stale[t])]


def check_stale(stale, tables):
    """Slipstream's stale rows: None, or per table a boolean array with one entry per row."""
    if stale is None:
        return None
    if len(stale) != len(tables):
        raise BatchError("stale", f"needs one array per table ({len(tables)}), not {len(stale)}")
    out = []
    for t, (s, E) in enumerate(zip(stale, tables)):
        s = np.asarray(s)
        if s.dtype != bool or s.shape != (E.shape[0],):
            raise BatchError(f"stale_{t}", f"must be a boolean array of shape {(E.shape[0],)}, not "
                             f"{s.dtype} {s.shape}")
        out.append(s)
    return out


def backward_update(tables, state, grad, plans, mode, optimizer, lr, eps):
    """Apply backward and the update in place on `tables` (and `state`), table by table and
    in each plan by plan (the parts, or :func:`row_group_plans` for backward by rows)."""
    D = tables[0].shape[1]
    for t in range(len(tables)):
        _backward_update_table(tables[t], None if state is None else state[t], grad[:, t * D:(t + 1) * D],
                               [p for p in plans if p.part.table == t], mode, optimizer, lr, eps)


def step_counts(plans, bwd_plans, mode, T):
    """(total, per-table) counts of a step: forward from ``plans`` (the parts), backward and
    the update from ``bwd_plans`` (the row groups, or the parts again)."""
    table_counts = [zero_counts() for _ in range(T)]
    for plan in plans:
        t = plan.part.table
        table_counts[t] = add_counts(table_counts[t], count_part(plan, mode))
    if bwd_plans is not plans:      # backward's and the update's counts from its own plans
        per_table = [zero_counts() for _ in range(T)]
        for plan in bwd_plans:
            per_table[plan.part.table] = add_counts(per_table[plan.part.table], count_part(plan, mode))
        for c, r in zip(table_counts, per_table):
            c["backward"], c["update"] = r["backward"], r["update"]
    total = zero_counts()
    for c in table_counts:
        total = add_counts(total, c)
    return total, table_counts


def check_step_inputs(tables, batch, grad, lr, poolings, mode, optimizer, eps, backward="rows"):
    """Validate the inputs of a step (errors name the field); returns the poolings list."""
    T = len(tables)
    poolings = list(poolings) if poolings is not None else ["sum"] * T
    _check_args(mode, optimizer, lr, eps, backward)
    check_tables(tables, batch, poolings)
    D = tables[0].shape[1]
    if not (isinstance(grad, np.ndarray) and grad.dtype == np.float32
            and grad.shape == (batch.batch_size, T * D)):
        raise BatchError("grad", f"must be float32 of shape {(batch.batch_size, T * D)}, not "
                         f"{getattr(grad, 'dtype', type(grad).__name__)} {getattr(grad, 'shape', '')}")
    return poolings


def initial_state(tables, optimizer, state):
    """The Adagrad state per table (a checked float32 copy; zeros when not given), or None
    for SGD."""
    if optimizer != "rowwise-adagrad":
        return None
    state = ([np.zeros(E.shape[0], np.float32) for E in tables] if state is None
             else [np.array(s, np.float32, copy=True) for s in state])
    if len(state) != len(tables):
        raise BatchError("state", f"needs one array per table ({len(tables)}), not {len(state)}")
    for t, (s, E) in enumerate(zip(state, tables)):
        if s.shape != (E.shape[0],):
            raise BatchError(f"state_{t}", f"must have shape {(E.shape[0],)}, not {s.shape}")
    return state


def step(tables, batch, grad, lr, *, poolings=None, mode="refree", optimizer="sgd", eps=1e-8,
         state=None, limits=None, backward="rows", groups=None, stale=None):
    """One training step.  Inputs are not modified; returns a StepResult.

    tables: list of float32 (rows, D); grad: float32 (B, T*D), the upstream gradient of the
    pooled output; poolings: "sum"/"mean" per table (default all "sum"); state: Adagrad
    state per table (float32 (rows,), default zeros); limits: PartLimits; backward: "rows"
    (the engine's) or "parts" (see the module docstring); groups: by rows, G per table
    (default: the fewest row groups that fit the limits); stale: per table a boolean per
    row, the rows whose updates are skipped (Slipstream, docs/design.md section 6: their
    lookups take no part in backward, no merge, no update; the counts count what is done).
    """
    tables = list(tables)
    T = len(tables)
    limits = limits or PartLimits()
    poolings = check_step_inputs(tables, batch, grad, lr, poolings, mode, optimizer, eps, backward)
    if groups is not None and backward != "rows":
        raise BatchError("groups", "row groups are backward by rows' (backward=\"rows\")")
    state = initial_state(tables, optimizer, state)
    stale = check_stale(stale, tables)
    lr32, eps32 = np.float32(lr), np.float32(eps)

    plans = plan_batch(batch, poolings, limits)
    by_rows = backward == "rows" and mode != "baseline"
    if by_rows:
        G = groups if groups is not None else [row_groups(batch, t, limits) for t in range(T)]
        bwd_plans = row_group_plans(batch, poolings, limits, G, stale)
    elif stale is not None:             # the parts again, without the stale rows' lookups
        bwd_plans = [plan_part(batch, p.part, p.pooling, stale=stale[p.part.table]) for p in plans]
    else:
        bwd_plans = plans
    if optimizer == "rowwise-adagrad" and backward == "parts":
        for t in range(T):
            n = sum(1 for p in plans if p.part.table == t)
            if n > 1:
                raise BatchError(f"table {t}", f"needs {n} parts under {limits}; row-wise Adagrad by "
                                 "parts needs each table's batch in one part (by rows takes any batch)")
    new_tables = [E.copy() for E in tables]
    with np.errstate(all="ignore"):     # inf and NaN are data here, not accidents
        pooled = forward(tables, batch, poolings, mode, plans)
        backward_update(new_tables, state, grad, bwd_plans, mode, optimizer, lr32, eps32)

    total, table_counts = step_counts(plans, bwd_plans, mode, T)
    return StepResult(canonical_nan(pooled), [canonical_nan(E) for E in new_tables],
                      None if state is None else [canonical_nan(s) for s in state],
                      total, table_counts, list(map(int, G)) if by_rows else None)
