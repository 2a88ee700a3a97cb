"""Vectorised replays of sequential binary32 folds.

A fold runs element by element inside each segment, but segments are independent, so the
k-th step of every segment is done in one numpy operation: the values are those of the
sequential loop, bit for bit.
"""
import numpy as np

from .arith import fma

__all__ = ["segment_ranks", "fold_rows", "replay_trie"]


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


def replay_trie(trie, key_c, key_src, S):
    """Values of every trie node: node = fma(c, S[src], parent), the root is +0.

    key_c, key_src: coefficient and source row of each key.  Returns (nodes, D) float32.
    """
    V = np.zeros((len(trie.node_parent), S.shape[1]), np.float32)
    depth = trie.node_depth
    for d in range(1, int(depth.max()) + 1 if len(depth) else 1):
        n = np.flatnonzero(depth == d)
        k = trie.node_key[n]
        V[n] = fma(key_c[k, None], S[key_src[k]], V[trie.node_parent[n]])
    return V
