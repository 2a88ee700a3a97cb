"""Operation counts of section 2 of docs/design.md ("Counting"), per part and summed.

An operation whose addend is the initial +0 is no addition (a multiply when c != 1); an
FMA with c != 1 is one addition and one multiply.
"""
import numpy as np

__all__ = ["MODES", "count_part", "add_counts", "zero_counts", "by_mode"]

MODES = ("baseline", "dedup", "refree")


def zero_counts():
    return {"forward": {"reads": 0, "adds": 0, "muls": 0},
            "backward": {"reads": 0, "adds": 0, "muls": 0},
            "update": {"rmw": 0},
            "lookups": 0, "distinct_rows": 0, "bags": 0, "parts": 0}


def _not_one(c):
    return int((np.asarray(c, np.float32) != np.float32(1)).sum())


def count_part(plan, mode):
    """Counts of one part (a TablePlan) in one mode."""
    lookups = len(plan.occ_row)
    distinct = len(plan.rows)
    chain_adds = int(np.maximum(plan.bag_len - 1, 0).sum())
    occ_muls = _not_one(plan.occ_w)
    if plan.pooling == "mean":
        inv_len = np.float32(1) / np.maximum(plan.bag_len, 1).astype(np.float32)
        bwd_occ_muls = _not_one(inv_len[plan.occ_bag])
    else:
        bwd_occ_muls = occ_muls
    nonempty = plan.grad_rows
    c = zero_counts()
    c.update(lookups=lookups, distinct_rows=distinct, bags=plan.num_bags, parts=1)
    f, b = c["forward"], c["backward"]
    if mode == "baseline":
        f.update(reads=lookups, adds=chain_adds, muls=occ_muls)
        b.update(reads=lookups, adds=0, muls=bwd_occ_muls)
        c["update"]["rmw"] = lookups
    elif mode == "dedup":
        f.update(reads=distinct, adds=chain_adds, muls=occ_muls)
        b.update(reads=nonempty, adds=lookups - distinct, muls=bwd_occ_muls)
        c["update"]["rmw"] = distinct
    elif mode == "refree":
        ft, bt = plan.fwd_trie, plan.bwd_trie
        f.update(reads=distinct, adds=ft.nodes_at_depth_2_or_more(),
                 muls=_not_one(plan.fkey_c[ft.node_key[1:]]))
        b.update(reads=nonempty, adds=bt.nodes_at_depth_2_or_more(),
                 muls=_not_one(plan.bkey_c[bt.node_key[1:]]))
        c["update"]["rmw"] = distinct
    else:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return c


def add_counts(a, b):
    """Sum two count trees of the same shape."""
    return {k: add_counts(v, b[k]) if isinstance(v, dict) else v + b[k] for k, v in a.items()}


def by_mode(per_mode):
    """{mode: counts} -> the same tree with {mode: n} at the leaves (the report's layout)."""
    first = per_mode[MODES[0]]
    return {k: by_mode({m: per_mode[m][k] for m in MODES}) if isinstance(v, dict)
            else {m: per_mode[m][k] for m in MODES} for k, v in first.items()}
