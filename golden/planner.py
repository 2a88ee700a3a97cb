"""The sharing planner of section 2 of docs/design.md: parts, row order, keys, key order, tries.

Everything here works on one *part* of one table: a run of consecutive bags that fits the
configured limits.  The plan fixes the order of every operation of the `dedup` and
`refree` modes; `replay.py` carries them out and `counts.py` counts them.
"""
from dataclasses import dataclass

import numpy as np

from .errors import MAX_ROW_GROUP_BITS, BatchError, ErrorCode
from .arith import canonical_nan
from .replay import segment_ranks, fold_rows

__all__ = ["PartLimits", "Part", "partition", "whole_table_part", "MAX_ROW_GROUP_BITS", "row_group_of", "row_groups", "Trie", "TablePlan", "plan_part",
           "plan_row_groups"]


@dataclass(frozen=True)
class PartLimits:
    """The on-chip buffer limits that a part must fit (parameters of the golden model too).

    Parameters
    ----------
    max_bags, max_lookups, max_distinct_rows:
        The most bags, lookups and distinct rows one part of one table may hold.
    max_bag_len:
        The longest bag accepted; a longer one is rejected with BAG_TOO_LONG.
    """
    max_bags: int = 4096
    max_lookups: int = 65536
    max_distinct_rows: int = 16384
    max_bag_len: int = 1024

    def __post_init__(self):
        for name in ("max_bags", "max_lookups", "max_distinct_rows", "max_bag_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"PartLimits.{name} must be a positive integer, not {v!r}")

    @classmethod
    def unlimited(cls):
        big = 1 << 62
        return cls(big, big, big, big)


@dataclass(frozen=True)
class Part:
    """Bags [bag_lo, bag_hi) of table `table`; `lo`, `hi` bound its slice of `indices`."""
    table: int
    bag_lo: int
    bag_hi: int
    lo: int
    hi: int


def partition(batch, limits):
    """Split each table's bags into parts by the rule of docs/design.md section 2.

    Scanning bags b = 0..B-1, a bag joins the current part unless the part would then
    exceed a limit; then the part closes before that bag.  A bag that alone exceeds a limit
    is rejected (BAG_TOO_LONG).  Returns the parts table by table, in processing order.
    """
    B = batch.batch_size
    parts = []
    for t in range(batch.num_tables):
        bag_lo, rows, lookups = 0, set(), 0
        for b in range(B):
            lo, hi = batch.bag_range(t, b)
            bag_rows = set(batch.indices[lo:hi].tolist())
            n = hi - lo
            if n > limits.max_bag_len or n > limits.max_lookups or len(bag_rows) > limits.max_distinct_rows:
                raise BatchError(f"bag {t * B + b}",
                                 f"of {n} lookups ({len(bag_rows)} distinct rows) exceeds the limits "
                                 f"{limits}", ErrorCode.BAG_TOO_LONG)
            # (the bag's new rows only: a union per bag would copy the part's rows each time)
            if (b - bag_lo + 1 > limits.max_bags or lookups + n > limits.max_lookups
                    or len(rows) + len(bag_rows - rows) > limits.max_distinct_rows):
                parts.append(_make_part(batch, t, bag_lo, b))
                bag_lo, rows, lookups = b, set(), 0
            rows |= bag_rows
            lookups += n
        parts.append(_make_part(batch, t, bag_lo, B))
    return parts


def whole_table_part(batch, t):
    """Every bag of table ``t`` as one part, whatever the limits: the scope of backward by
    rows, where each distinct row of the table merges every occurrence in the batch."""
    return _make_part(batch, t, 0, batch.batch_size)


def row_group_of(rows, G):
    """The row group of each row for G = 2**b groups: the XOR of the row's b-bit digits.
    (Not ``r mod G``: the ranks interleave rows by their low bits too, so with ``r mod G``
    a group's rows would all live in the same ranks.)"""
    rows = np.asarray(rows, np.int64)
    b = int(G).bit_length() - 1
    g = np.zeros(rows.shape, np.int64)
    if b:
        for shift in range(0, 64, b):
            g ^= (rows >> shift) & (G - 1)
    return g


def _group_sizes(rows, G):
    """Distinct rows of each group (``rows``: the table's distinct rows)."""
    return np.bincount(row_group_of(rows, G), minlength=G)


def row_groups(batch, t, limits):
    """The row groups of table ``t``'s backward by rows (docs/design.md section 2): a row r
    is in group :func:`row_group_of` (the XOR of its log2 G-bit digits), with G the smallest
    power of two for which every group holds at
    most ``limits.max_distinct_rows`` distinct rows of the batch (a group's pass takes its
    bags in chunks, as parts are formed, so its lookups are not limited).  Returns G.

    Raises
    ------
    BatchError
        ROW_GROUP_TOO_LARGE when no G up to ``2**MAX_ROW_GROUP_BITS`` fits."""
    rows = np.unique(batch.table_slice(t)[0])
    for bits in range(MAX_ROW_GROUP_BITS + 1):
        if _group_sizes(rows, 1 << bits).max(initial=0) <= limits.max_distinct_rows:
            return 1 << bits
    raise BatchError(f"table {t}", f"fits no row grouping (2**{MAX_ROW_GROUP_BITS} groups of at most "
                     f"{limits.max_distinct_rows} distinct rows)", ErrorCode.ROW_GROUP_TOO_LARGE)


def _make_part(batch, t, bag_lo, bag_hi):
    lo, _ = batch.bag_range(t, bag_lo)
    hi = batch.bag_range(t, bag_hi - 1)[1]
    return Part(t, bag_lo, bag_hi, lo, hi)


@dataclass(frozen=True)
class Trie:
    """Prefix tree of key sequences; node 0 is the root (the +0 accumulator).

    node_parent, node_key, node_depth: per node (the root has key -1, depth 0).
    owner_node: the terminal node of each owner's sequence (0 for an empty one).
    Nodes are numbered level by level, so a parent always precedes its children.
    """
    node_parent: np.ndarray
    node_key: np.ndarray
    node_depth: np.ndarray
    owner_node: np.ndarray

    @property
    def num_nodes(self):
        return len(self.node_parent) - 1

    def nodes_at_depth_2_or_more(self):
        return int((self.node_depth >= 2).sum())


def build_trie(owner, key, num_owners):
    """Trie of the sequences `key[owner == o]`, each already in fold order (key ascending).

    Level by level, a level's nodes are its distinct (parent, key) edges in that order.  Once
    a level's edges are all distinct, no two sequences share a node again: the rest are
    chains, numbered at once (:func:`_chains`), in the order their last shared level fixes."""
    pos = segment_ranks(owner)
    parent_of_owner = np.zeros(num_owners, np.int64)
    parents, keys, depths = [np.array([-1])], [np.array([-1])], [np.array([0])]
    next_id = 1
    depth_max = int(pos.max()) + 1 if len(pos) else 0
    num_keys = int(key.max()) + 1 if len(key) else 1
    by_depth = np.argsort(pos, kind="stable")
    bounds = np.searchsorted(pos[by_depth], np.arange(depth_max + 1))
    for d in range(depth_max):
        sel = by_depth[bounds[d]:bounds[d + 1]]
        o = owner[sel]
        edge = parent_of_owner[o] * num_keys + key[sel]
        uniq, inverse = np.unique(edge, return_inverse=True)
        parents.append(uniq // num_keys)
        keys.append(uniq % num_keys)
        depths.append(np.full(len(uniq), d + 1))
        parent_of_owner[o] = next_id + inverse
        next_id += len(uniq)
        if len(uniq) == len(sel) and d + 1 < depth_max:
            chain = _chains(by_depth[bounds[d + 1]:], owner, key, pos, parent_of_owner, next_id)
            parents.append(chain[0])
            keys.append(chain[1])
            depths.append(chain[2])
            break
    return Trie(np.concatenate(parents), np.concatenate(keys), np.concatenate(depths),
                parent_of_owner)


def _chains(rest, owner, key, pos, parent_of_owner, next_id):
    """The nodes of elements ``rest`` (sorted by depth), whose sequences share no node: a
    level's nodes in the order of their owners' nodes at the last shared level (as distinct
    parents sort them), numbered from ``next_id``.  Updates ``parent_of_owner`` to each
    owner's last node; returns (parents, keys, depths)."""
    o = owner[rest]
    order = np.lexsort((parent_of_owner[o], pos[rest]))     # by level, then the owner's node
    el = rest[order]
    node = next_id + np.arange(len(el))
    by_owner = np.lexsort((pos[el], owner[el]))             # each owner's chain, in depth order
    chain_owner = owner[el][by_owner]
    chain_node = node[by_owner]
    parent = np.empty(len(el), np.int64)
    first = np.ones(len(el), bool)
    first[1:] = chain_owner[1:] != chain_owner[:-1]
    parent_by_owner = np.where(first, parent_of_owner[chain_owner], np.roll(chain_node, 1))
    parent[by_owner] = parent_by_owner
    last = np.ones(len(el), bool)
    last[:-1] = chain_owner[:-1] != chain_owner[1:]
    parent_of_owner[chain_owner[last]] = chain_node[last]
    return parent, key[el], pos[el] + 1


@dataclass(frozen=True)
class TablePlan:
    """Plan of one part of one table.

    Occurrence arrays (one entry per lookup, in index order): ``occ_row``, ``occ_bag``
    (bag number within the part), ``occ_w`` (weight, or 1), ``occ_stream_pos`` (position
    of the occurrence's row in the row stream).

    Row order: ``rows`` (distinct rows in stream order) and ``row_bags`` (bags containing each).

    Forward keys (one per distinct (bag, row) pair), sorted in key order:
    ``fkey_row`` (index into ``rows``), ``fkey_c``; ``fwd_pairs`` = (bag, key rank) of
    every pair; ``fwd_trie`` over bags.

    Backward keys, sorted in key order: ``bkey_bag``, ``bkey_c``; ``bwd_trie`` over the
    positions of ``rows``.

    ``group``: ``(G, g)`` for a row group of backward by rows (only the lookups of rows
    ``row_group_of(r, G) == g``, every bag of the table), or None for a part.
    """
    part: Part
    pooling: str
    num_bags: int
    bag_len: np.ndarray
    occ_row: np.ndarray
    occ_bag: np.ndarray
    occ_w: np.ndarray
    occ_stream_pos: np.ndarray
    weighted: bool
    rows: np.ndarray
    row_bags: np.ndarray
    fkey_row: np.ndarray
    fkey_c: np.ndarray
    fwd_trie: Trie
    bkey_bag: np.ndarray
    bkey_c: np.ndarray
    bwd_trie: Trie
    group: tuple | None = None

    @property
    def grad_rows(self):
        """Gradient rows the backward reads: the bags with a lookup in the plan."""
        return int((np.bincount(self.occ_bag, minlength=self.num_bags) > 0).sum())


def _order(*keys):
    """Indices that sort by the given keys, the first key most significant."""
    return np.lexsort(keys[::-1])


def plan_part(batch, part, pooling, group=None, stale=None):
    """Build the plan of one part (see TablePlan), or with ``group = (G, g)`` of one row
    group of the part's bags (backward by rows): the lookups of rows in group g only,
    each bag keeping its whole length (a mean-pooled bag's ``fl(1/len)``), and the gradient
    rows in bag order.  ``stale`` (a backward plan's; a boolean per row of the table):
    the lookups of those rows are left out as a group's other rows are (Slipstream's skipped
    updates: no merge, no update), each bag keeping its whole length."""
    lookups = _part_lookups(batch, part)
    idx = lookups[0]
    if group is not None or stale is not None:
        keep = np.ones(len(idx), bool)
        if group is not None:
            keep &= row_group_of(idx, group[0]) == group[1]
        if stale is not None:
            keep &= ~stale[idx]
        lookups = _kept(lookups, keep)
    return _plan(part, pooling, group, *lookups)


def _part_lookups(batch, part):
    """(indices, bag of each lookup, weights, bag lengths, weighted) of a part's lookups."""
    idx = batch.indices[part.lo:part.hi]
    offs = batch.offsets[part.table * batch.batch_size + part.bag_lo:
                         part.table * batch.batch_size + part.bag_hi + 1] - part.lo
    bag_len = np.diff(offs)
    occ_bag = np.repeat(np.arange(part.bag_hi - part.bag_lo), bag_len)
    weighted = batch.per_sample_weights is not None
    occ_w = (batch.per_sample_weights[part.lo:part.hi] if weighted
             else np.ones(len(idx), np.float32))
    return idx, occ_bag, occ_w, bag_len, weighted


def _kept(lookups, keep):
    """The lookups where ``keep`` (a mask, or indices in ascending order: index order is
    kept), each bag keeping its whole length."""
    idx, occ_bag, occ_w, bag_len, weighted = lookups
    return idx[keep], occ_bag[keep], occ_w[keep], bag_len, weighted


def _plan(part, pooling, group, idx, occ_bag, occ_w, bag_len, weighted):
    """The plan of a part's (or a row group's) lookups ``idx``, in index order."""
    nb = part.bag_hi - part.bag_lo
    # Distinct (bag, row) pairs; a pair's coefficient c is the left fold of its weights in
    # index order starting from the first weight (the multiplicity when unweighted).
    rows, occ_rowpos = np.unique(idx, return_inverse=True)       # rows ascending
    pair_id = occ_bag * len(rows) + occ_rowpos
    pairs, occ_pair = np.unique(pair_id, return_inverse=True)    # by (bag, row)
    pair_bag, pair_rowpos = pairs // max(len(rows), 1), pairs % max(len(rows), 1)
    first = np.zeros(len(pairs), np.int64)
    first[occ_pair[::-1]] = np.arange(len(idx))[::-1]            # first occurrence of a pair
    c = occ_w[first].copy()
    rest = np.ones(len(idx), bool)
    rest[first] = False
    fold_rows(c[:, None], occ_pair[rest], np.arange(len(idx))[rest], occ_w[:, None])
    # A sum of weights is an arithmetic result: its NaN is the canonical one (a single
    # weight is not a result and keeps its bits), as the analyzer's adder gives it.
    folded = np.zeros(len(pairs), bool)
    folded[occ_pair[rest]] = True
    c[folded] = canonical_nan(c[folded])

    # Row order: bags containing the row (descending), then row ascending.
    row_bags = np.bincount(pair_rowpos, minlength=len(rows))
    row_order = _order(-row_bags, rows)
    row_rank = np.empty(len(rows), np.int64)
    row_rank[row_order] = np.arange(len(rows))

    # Forward keys (row, bits of c): frequency = bags holding the key; key order = row
    # order, then frequency descending, then c's bits ascending.
    cbits = c.view(np.uint32).astype(np.int64)
    fkeys, pair_fkey, ffreq = np.unique(pair_rowpos * (1 << 32) + cbits,
                                        return_inverse=True, return_counts=True)
    fk_rowpos, fk_bits = fkeys >> 32, fkeys & 0xFFFFFFFF
    fk_order = _order(row_rank[fk_rowpos], -ffreq, fk_bits)
    fk_rank = np.empty(len(fkeys), np.int64)
    fk_rank[fk_order] = np.arange(len(fkeys))
    pair_frank = fk_rank[pair_fkey]
    s = _order(pair_bag, pair_frank)
    fwd_trie = build_trie(pair_bag[s], pair_frank[s], nb)

    # Backward keys (bag, c'), c' = c, or fl(c * fl(1/len)) for mean.  Gradient rows are
    # ordered by the embedding rows using them (descending), then bag ascending; by rows
    # (a group) by bag alone, the order in which a group's pass streams them.
    if pooling == "mean":
        inv_len = (np.float32(1) / np.maximum(bag_len, 1).astype(np.float32)).astype(np.float32)
        cb = (c * inv_len[pair_bag]).astype(np.float32)
    else:
        cb = c
        inv_len = None
    cbbits = cb.view(np.uint32).astype(np.int64)
    bag_rows = np.bincount(pair_bag, minlength=nb)
    bkeys, pair_bkey, bfreq = np.unique(pair_bag * (1 << 32) + cbbits,
                                        return_inverse=True, return_counts=True)
    bk_bag, bk_bits = bkeys >> 32, bkeys & 0xFFFFFFFF
    bk_order = (_order(-bag_rows[bk_bag], bk_bag, -bfreq, bk_bits) if group is None
                else _order(bk_bag, -bfreq, bk_bits))
    bk_rank = np.empty(len(bkeys), np.int64)
    bk_rank[bk_order] = np.arange(len(bkeys))
    pair_brank = bk_rank[pair_bkey]
    s = _order(pair_rowpos, pair_brank)
    bwd_trie = build_trie(row_rank[pair_rowpos[s]], pair_brank[s], len(rows))

    return TablePlan(
        part=part, pooling=pooling, num_bags=nb, bag_len=bag_len,
        occ_row=idx, occ_bag=occ_bag, occ_w=occ_w, occ_stream_pos=row_rank[occ_rowpos],
        weighted=weighted,
        rows=rows[row_order], row_bags=row_bags[row_order],
        fkey_row=row_rank[fk_rowpos[fk_order]],
        fkey_c=fk_bits[fk_order].astype(np.uint32).view(np.float32),
        fwd_trie=fwd_trie,
        bkey_bag=bk_bag[bk_order], bkey_c=bk_bits[bk_order].astype(np.uint32).view(np.float32),
        bwd_trie=bwd_trie, group=group,
    )


def plan_row_groups(batch, t, pooling, limits, groups=None, stale=None):
    """The plans of table ``t``'s backward by rows, one per non-empty row group, in group
    order: ``groups`` G (default :func:`row_groups`), a power of two; ``stale``: see
    :func:`plan_part` (the groups are those of every row of the batch)."""
    G = row_groups(batch, t, limits) if groups is None else groups
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1 or G & (G - 1) \
            or G > 1 << MAX_ROW_GROUP_BITS:
        raise BatchError(f"groups of table {t}", f"must be a power of two up to 2**{MAX_ROW_GROUP_BITS}, "
                         f"not {G!r}")
    per_group = _group_sizes(np.unique(batch.table_slice(t)[0]), G)
    if per_group.max(initial=0) > limits.max_distinct_rows:
        raise BatchError(f"groups of table {t}", f"{G} row groups do not fit a part's {limits.max_distinct_rows} "
                         f"distinct rows; {row_groups(batch, t, limits)} do", ErrorCode.ROW_GROUP_TOO_LARGE)
    whole = whole_table_part(batch, t)
    lookups = _part_lookups(batch, whole)
    if stale is not None:
        lookups = _kept(lookups, ~stale[lookups[0]])
    # Each lookup's group once, then each group's lookups in index order (a stable sort).
    group_of = row_group_of(lookups[0], G)
    by_group = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[by_group], np.arange(G + 1))
    return [_plan(whole, pooling, (int(G), int(g)), *_kept(lookups, by_group[bounds[g]:bounds[g + 1]]))
            for g in np.flatnonzero(per_group)]
