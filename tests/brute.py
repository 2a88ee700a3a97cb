"""Slow, obviously-correct reimplementations of docs/design.md section 2 in plain Python.

They share nothing with golden/planner.py and golden/replay.py but the binary32 primitives,
so a test comparing the two catches a wrong plan or a wrong replay.
"""
import numpy as np

from refree.golden.arith import fma

f32 = np.float32


def table_bags(batch, t):
    idx, offs, w = batch.table_slice(t)
    return [[(int(idx[i]), f32(1) if w is None else w[i]) for i in range(offs[b], offs[b + 1])]
            for b in range(batch.batch_size)]


def coalesce(bag, weighted):
    """[(row, c)] in first-appearance order; c = left fold of weights from the first weight."""
    keys = {}
    for r, w in bag:
        if r in keys:
            keys[r] = f32(keys[r] + w) if weighted else f32(keys[r] + 1)
        else:
            keys[r] = f32(w) if weighted else f32(1)
    return list(keys.items())


def cbits(c):
    return int(np.float32(c).view(np.uint32))


def forward_sequences(bags, weighted):
    """Each bag's keys in key order (refree forward)."""
    coal = [coalesce(b, weighted) for b in bags]
    row_bags, key_freq = {}, {}
    for keys in coal:
        for r, c in keys:
            row_bags[r] = row_bags.get(r, 0) + 1
            key_freq[(r, cbits(c))] = key_freq.get((r, cbits(c)), 0) + 1
    row_order = sorted(row_bags, key=lambda r: (-row_bags[r], r))
    rank = {r: i for i, r in enumerate(row_order)}

    def key_order(k):
        r, c = k
        return (rank[r], -key_freq[(r, cbits(c))], cbits(c))
    return [sorted(keys, key=key_order) for keys in coal], row_order


def backward_sequences(bags, weighted, mean, by_rows=False):
    """Each embedding row's gradient keys (bag, c') in key order (refree backward; by rows,
    in bag order)."""
    coal = [coalesce(b, weighted) for b in bags]
    uses = {}                       # row -> [(bag, c')]
    for b, keys in enumerate(coal):
        inv = f32(f32(1) / f32(len(bags[b]))) if mean and bags[b] else None
        for r, c in keys:
            uses.setdefault(r, []).append((b, f32(c * inv) if mean else c))
    bag_rows = [len(k) for k in coal]
    freq = {}
    for ks in uses.values():
        for b, c in ks:
            freq[(b, cbits(c))] = freq.get((b, cbits(c)), 0) + 1

    def key_order(k):
        b, c = k
        return (0 if by_rows else -bag_rows[b], b, -freq[(b, cbits(c))], cbits(c))
    return {r: sorted(ks, key=key_order) for r, ks in uses.items()}


def trie_adds(sequences, key=lambda k: (k[0], cbits(k[1]))):
    """Trie nodes at depth >= 2 = distinct prefixes of length >= 2."""
    prefixes = set()
    for seq in sequences:
        ks = tuple(key(k) for k in seq)
        prefixes.update(ks[:n] for n in range(2, len(ks) + 1))
    return len(prefixes)


def brute_counts(batch, t, pooling):
    bags = table_bags(batch, t)
    weighted = batch.per_sample_weights is not None
    lookups = sum(len(b) for b in bags)
    distinct = len({r for b in bags for r, _ in b})
    chain = sum(max(len(b) - 1, 0) for b in bags)
    nonempty = sum(1 for b in bags if b)
    fseq, _ = forward_sequences(bags, weighted)
    bseq = backward_sequences(bags, weighted, pooling == "mean")
    return {
        "baseline": dict(f_reads=lookups, f_adds=chain, b_reads=lookups, b_adds=0, rmw=lookups),
        "dedup": dict(f_reads=distinct, f_adds=chain, b_reads=nonempty, b_adds=lookups - distinct,
                      rmw=distinct),
        "refree": dict(f_reads=distinct, f_adds=trie_adds(fseq), b_reads=nonempty,
                       b_adds=trie_adds(bseq.values()), rmw=distinct),
    }


def refree_pooled_by_bag_fold(E, batch, t, pooling):
    """Each bag's value as its own left fold in key order: acc = fma(c, E[r], acc)."""
    bags = table_bags(batch, t)
    fseq, _ = forward_sequences(bags, batch.per_sample_weights is not None)
    out = np.zeros((len(bags), E.shape[1]), np.float32)
    for b, seq in enumerate(fseq):
        acc = np.zeros(E.shape[1], np.float32)
        for r, c in seq:
            acc = fma(c, E[r], acc)
        if pooling == "mean" and bags[b]:
            acc = acc / f32(len(bags[b]))
        out[b] = acc
    return out


def refree_merged_grad_by_row_fold(G, batch, t, pooling, by_rows=False):
    """{row: merged gradient} as each row's own left fold of its keys: g = fma(c, G[b], g)."""
    bags = table_bags(batch, t)
    bseq = backward_sequences(bags, batch.per_sample_weights is not None, pooling == "mean", by_rows)
    out = {}
    for r, seq in bseq.items():
        g = np.zeros(G.shape[1], np.float32)
        for b, c in seq:
            g = fma(c, G[b], g)
        out[r] = g
    return out
