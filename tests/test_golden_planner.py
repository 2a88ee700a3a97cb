"""The planner and the refree replay against plain-Python reimplementations."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refree.golden.batch import Batch
from refree.golden.counts import count_part
from refree.golden.errors import BatchError, ErrorCode
from refree.golden.model import step
from refree.golden.planner import PartLimits, build_trie, partition, plan_part

from brute import (brute_counts, refree_pooled_by_bag_fold, refree_merged_grad_by_row_fold)


def one_table(bags, weights=None):
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    w = None if weights is None else np.array(weights, np.float32)
    return Batch(idx, offs, len(bags), w)


def test_worked_example_of_the_design():
    batch = one_table([[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    plan = plan_part(batch, partition(batch, PartLimits())[0], "sum")
    assert plan.rows.tolist()[:2] == [2, 5]
    base, ref = count_part(plan, "baseline"), count_part(plan, "refree")
    assert (base["forward"]["adds"], ref["forward"]["adds"]) == (5, 3)
    assert (count_part(plan, "dedup")["backward"]["adds"], ref["backward"]["adds"]) == (4, 2)
    assert ref["forward"]["reads"] == 5 and base["forward"]["reads"] == 9


def level_by_level_trie(sequences):
    """The trie's numbering stated plainly: level d's nodes are its distinct (parent node,
    key) edges in ascending order, numbered after every shallower level's."""
    node_of, parent, key, depth = {(): 0}, [-1], [-1], [0]
    for d in range(max(map(len, sequences), default=0)):
        edges = sorted({(node_of[tuple(s[:d])], s[d]) for s in sequences if len(s) > d})
        number = {e: len(parent) + i for i, e in enumerate(edges)}
        parent += [p for p, _ in edges]
        key += [k for _, k in edges]
        depth += [d + 1] * len(edges)
        for s in sequences:
            if len(s) > d:
                node_of[tuple(s[:d + 1])] = number[(node_of[tuple(s[:d])], s[d])]
    return parent, key, depth, [node_of[tuple(s)] for s in sequences]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), max_size=9), max_size=8))
def test_build_trie_numbers_nodes_level_by_level(sequences):
    # (short alphabets share prefixes; long sequences run on as chains past the last shared
    # level, which build_trie numbers at once)
    owner = np.array([o for o, s in enumerate(sequences) for _ in s], np.int64)
    key = np.array([k for s in sequences for k in s], np.int64)
    trie = build_trie(owner, key, len(sequences))
    got = (trie.node_parent.tolist(), trie.node_key.tolist(), trie.node_depth.tolist(), trie.owner_node.tolist())
    assert got == level_by_level_trie(sequences)


@st.composite
def small_batches(draw):
    T = draw(st.integers(1, 2))
    B = draw(st.integers(1, 7))
    rows = draw(st.integers(1, 6))
    bags = [draw(st.lists(st.integers(0, rows - 1), max_size=6)) for _ in range(T * B)]
    weighted = draw(st.booleans())
    n = sum(len(b) for b in bags)
    # few distinct weights, so equal coefficients (shared keys) actually happen
    weights = draw(st.lists(st.sampled_from([1.0, -1.0, 0.5, 0.0, -0.0, 3.0]), min_size=n, max_size=n)) \
        if weighted else None
    pooling = "sum" if weighted else draw(st.sampled_from(["sum", "mean"]))
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    batch = Batch(idx, offs, B, None if weights is None else np.array(weights, np.float32))
    return batch, rows, pooling


@settings(max_examples=300, deadline=None)
@given(small_batches())
def test_counts_equal_brute_force(case):
    batch, _, pooling = case
    for part in partition(batch, PartLimits.unlimited()):
        plan = plan_part(batch, part, pooling)
        want = brute_counts(batch, part.table, pooling)
        for mode, w in want.items():
            c = count_part(plan, mode)
            got = dict(f_reads=c["forward"]["reads"], f_adds=c["forward"]["adds"],
                       b_reads=c["backward"]["reads"], b_adds=c["backward"]["adds"],
                       rmw=c["update"]["rmw"])
            assert got == w, (mode, part.table)


@settings(max_examples=150, deadline=None)
@given(small_batches(), st.integers(0, 2**32 - 1))
def test_refree_replay_equals_independent_folds(case, seed):
    batch, rows, pooling = case
    rng = np.random.default_rng(seed)
    D = 5
    T = batch.num_tables
    tables = [rng.standard_normal((rows, D)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((batch.batch_size, T * D)).astype(np.float32)
    lr = np.float32(0.25)
    res = step(tables, batch, grad, lr, poolings=[pooling] * T, mode="refree")
    for t in range(T):
        want = refree_pooled_by_bag_fold(tables[t], batch, t, pooling)
        got = res.pooled[:, t * D:(t + 1) * D]
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
        merged = refree_merged_grad_by_row_fold(grad[:, t * D:(t + 1) * D], batch, t, pooling, by_rows=True)
        from refree.golden.arith import fma
        expect = tables[t].copy()
        for r, g in merged.items():
            expect[r] = fma(-lr, g, expect[r])
        assert np.array_equal(res.tables[t].view(np.uint32), expect.view(np.uint32))


def test_rows_not_in_the_batch_are_untouched():
    rng = np.random.default_rng(1)
    batch = one_table([[3, 3, 1], [], [7]])
    E = rng.standard_normal((10, 4)).astype(np.float32)
    G = rng.standard_normal((3, 4)).astype(np.float32)
    for mode in ("baseline", "dedup", "refree"):
        res = step([E], batch, G, 0.5, mode=mode)
        untouched = [r for r in range(10) if r not in (1, 3, 7)]
        assert np.array_equal(res.tables[0][untouched], E[untouched])
        assert not np.array_equal(res.tables[0][[1, 3, 7]], E[[1, 3, 7]])
        assert np.array_equal(res.pooled[1], np.zeros(4, np.float32))   # empty bag: +0


def test_single_negative_zero_row_gives_positive_zero():
    batch = one_table([[0]])
    E = np.full((1, 3), -0.0, np.float32)
    for mode in ("baseline", "dedup", "refree"):
        out = step([E], batch, np.zeros((1, 3), np.float32), 0.1, mode=mode).pooled
        assert out.view(np.uint32).tolist() == [[0, 0, 0]]


# -- partition rule -------------------------------------------------------------------------

def test_partition_closes_a_part_before_the_bag_that_would_overflow():
    batch = one_table([[0, 1], [2], [3, 4, 5], [0], [6, 7]])
    parts = partition(batch, PartLimits(max_bags=10, max_lookups=4, max_distinct_rows=10, max_bag_len=4))
    assert [(p.bag_lo, p.bag_hi) for p in parts] == [(0, 2), (2, 4), (4, 5)]
    parts = partition(batch, PartLimits(max_bags=2, max_lookups=99, max_distinct_rows=99, max_bag_len=9))
    assert [(p.bag_lo, p.bag_hi) for p in parts] == [(0, 2), (2, 4), (4, 5)]
    parts = partition(batch, PartLimits(max_bags=9, max_lookups=99, max_distinct_rows=4, max_bag_len=9))
    # {0,1,2} + {3,4,5} would be 6 rows; {3,4,5} + {0} = 4; + {6,7} would be 6
    assert [(p.bag_lo, p.bag_hi) for p in parts] == [(0, 2), (2, 4), (4, 5)]


def test_a_bag_over_a_limit_is_rejected():
    batch = one_table([[0], [1, 2, 3]])
    with pytest.raises(BatchError) as e:
        partition(batch, PartLimits(max_bag_len=2))
    assert e.value.code == ErrorCode.BAG_TOO_LONG and "bag 1" in str(e.value)


def test_split_batch_equals_parts_replayed_one_after_another():
    """By parts (the golden model's earlier rule): forward over every part with the old
    table, then updates part by part."""
    rng = np.random.default_rng(4)
    bags = [list(rng.integers(0, 6, rng.integers(0, 5))) for _ in range(12)]
    batch = one_table(bags)
    E = rng.standard_normal((6, 3)).astype(np.float32)
    G = rng.standard_normal((12, 3)).astype(np.float32)
    limits = PartLimits(max_bags=4, max_lookups=99, max_distinct_rows=99, max_bag_len=99)
    whole = step([E], batch, G, 0.5, mode="refree", limits=limits, backward="parts")
    assert whole.counts["parts"] == 3
    cur = E
    for k in range(3):
        sub = one_table(bags[4 * k:4 * k + 4])
        r = step([cur], sub, G[4 * k:4 * k + 4], 0.5, mode="refree", backward="parts")
        assert np.array_equal(whole.pooled[4 * k:4 * k + 4], step([E], sub, G[4 * k:4 * k + 4], 0.5,
                                                                  mode="refree").pooled)
        cur = r.tables[0]
    assert np.array_equal(whole.tables[0], cur)


def test_adagrad_by_parts_rejects_a_batch_that_needs_two_parts():
    batch = one_table([[0], [1], [2]])
    E = np.zeros((3, 2), np.float32)
    kw = dict(mode="dedup", optimizer="rowwise-adagrad", limits=PartLimits(max_bags=2))
    with pytest.raises(BatchError, match="by parts"):
        step([E], batch, np.zeros((3, 2), np.float32), 0.1, **kw, backward="parts")
    assert step([E], batch, np.ones((3, 2), np.float32), 0.1, **kw).counts["update"]["rmw"] == 3   # by rows


def test_a_rows_keys_stream_by_frequency_then_coefficient_bits():
    """Key order within a row does not change any value (a bag holds one key per row), but
    it fixes the stream order the hardware follows, so it is checked directly."""
    batch = one_table([[0], [0], [0], [0, 1]], weights=[3.0, 2.0, 2.0, -1.0, 5.0])
    plan = plan_part(batch, partition(batch, PartLimits())[0], "sum")
    assert plan.rows.tolist() == [0, 1]
    assert plan.fkey_c.tolist() == [2.0, 3.0, -1.0, 5.0]   # freq 2, then bits 0x40400000 < 0xBF800000
    assert plan.fkey_row.tolist() == [0, 0, 0, 1]
