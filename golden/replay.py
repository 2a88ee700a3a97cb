"""Vectorised replays of sequential binary32 folds.

A fold runs element by element inside each segment, but segments are independent, so the
k-th step of every segment is done in one numpy operation: the values are those of the
sequential loop, bit for bit.
"""
import numpy as np

from .arith import fma

__all__ = ["segment_ranks", "fold_rows", "replay_trie", "replay_tries"]


def segment_ranks(seg):
    """Position of each element within its segment, counting in array order."""
    seg = np.asarray(seg)
    order = np.argsort(seg, kind="stable")
    s = seg[order]
    pos = np.arange(len(s))
    start = np.ones(len(s), bool)
    start[1:] = s[1:] != s[:-1]
    first = np.maximum.accumulate(np.where(start, pos, 0)) if len(s) else pos
    rank = np.empty(len(s), np.int64)
    rank[order] = pos - first
    return rank


def fold_rows(acc, seg, src, S, coef=None):
    """In place, for each element i in array order: acc[seg[i]] op= S[src[i]].

    op is ``acc + S[src]`` when coef is None, else ``fma(coef[i], S[src], acc)``.  Elements
    of one segment are applied in array order.  Returns acc.
    """
    rank = segment_ranks(seg)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2 if len(rank) else 1))
    for k in range(len(bounds) - 1):
        sel = by_rank[bounds[k]:bounds[k + 1]]
        dst = seg[sel]
        if coef is None:
            acc[dst] = acc[dst] + S[src[sel]]
        else:
            acc[dst] = fma(coef[sel, None], S[src[sel]], acc[dst])
    return acc


def _fma_level(c, x, acc):
    """fma(c, x, acc) per row; where every c is 1, the float32 add ``x + acc``: the same
    single rounding, and the operands in :func:`fma`'s order (``c * x + acc``), so that of
    two NaNs the same one's payload is kept."""
    if (c == 1).all():
        with np.errstate(over="ignore", invalid="ignore"):
            return x + acc
    return fma(c[:, None], x, acc)


def replay_trie(trie, key_c, key_src, S):
    """Values of every trie node: node = fma(c, S[src], parent), the root is +0.

    key_c, key_src: coefficient and source row of each key.  Returns (nodes, D) float32.
    """
    return replay_tries([trie], [key_c], [key_src], S)[0]


def replay_tries(tries, key_cs, key_srcs, S):
    """:func:`replay_trie` of independent tries over the same S, level by level all at once
    (a level of every trie in one operation).  Returns a list of (nodes, D) float32."""
    sizes = [len(t.node_parent) for t in tries]
    base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    parent, depth = np.zeros(base[-1], np.int64), np.zeros(base[-1], np.int64)
    c, src = np.zeros(base[-1], np.float32), np.zeros(base[-1], np.int64)
    for t, kc, ks, lo, hi in zip(tries, key_cs, key_srcs, base[:-1], base[1:]):
        parent[lo:hi], depth[lo:hi] = t.node_parent + lo, t.node_depth
        keyed = t.node_key[1:]          # (node 0 is the root, which has no key)
        c[lo + 1:hi], src[lo + 1:hi] = kc[keyed], ks[keyed]
    V = np.zeros((int(base[-1]), S.shape[1]), np.float32)
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(int(depth.max(initial=0)) + 2))
    for d in range(1, len(bounds) - 1):
        n = by_depth[bounds[d]:bounds[d + 1]]
        V[n] = _fma_level(c[n], S[src[n]], V[parent[n]])
    return [V[lo:hi] for lo, hi in zip(base[:-1], base[1:])]
