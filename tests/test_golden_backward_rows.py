"""Backward by rows in the golden model (``step(..., backward="rows")``, docs/design.md
section 2, "Batches larger than the buffers"): each distinct row of a table merges every
occurrence in the whole batch and is updated once, whatever the parts and the row groups.
Checked against independent per-row loops, against backward by parts where the two must
agree (one part in `dedup`; `baseline`, whose updates go in index order either way), and
by its counts against plain-Python counts of the groups."""
import numpy as np
import pytest
from brute import backward_sequences, refree_merged_grad_by_row_fold, table_bags, trie_adds

from refree.golden.arith import fma
from refree.golden.batch import Batch
from refree.golden.errors import BatchError, ErrorCode
from refree.golden.model import step
from refree.golden.planner import PartLimits, partition, row_group_of, row_groups
from refree.golden.traces import movielens_batch

SMALL = PartLimits(max_bags=16, max_lookups=64, max_distinct_rows=24, max_bag_len=16)
LR = np.float32(0.05)


def group(r, n):
    """The row group of row r among n = 2**b: the XOR of r's b-bit digits (a plain loop)."""
    g = 0
    while n > 1 and r:
        g ^= r % n
        r //= n
    return g


def random_case(seed, T=2, B=48, rows=40, D=8, weighted=False):
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 7, T * B)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices = (rows * rng.random(offsets[-1]) ** 2).astype(np.int64)     # skewed: rows repeat
    w = rng.uniform(-1, 1, len(indices)).astype(np.float32) if weighted else None
    batch = Batch(indices, offsets, B, w)
    tables = [rng.standard_normal((rows, D)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((B, T * D)).astype(np.float32)
    return batch, tables, grad


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("pooling,weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_dedup_merges_each_row_over_the_whole_batch_in_index_order(pooling, weighted):
    """An independent loop: per row, g = +0, then g = g + fl(coef * G[b]) for each occurrence
    in index order over the whole batch (coef 1, w, or fl(1/len)), then E = fma(-lr, g, E)."""
    batch, tables, grad = random_case(1, weighted=weighted)
    assert len(partition(batch, SMALL)) > 2 * batch.num_tables      # several parts a table
    res = step(tables, batch, grad, LR, poolings=[pooling] * 2, mode="dedup", limits=SMALL, backward="rows")
    D = tables[0].shape[1]
    for t, E in enumerate(tables):
        g = {}
        for b in range(batch.batch_size):
            lo, hi = batch.bag_range(t, b)
            for k in range(lo, hi):
                coef = (batch.per_sample_weights[k] if weighted
                        else np.float32(1) / np.float32(hi - lo) if pooling == "mean" else np.float32(1))
                term = (np.float32(coef) * grad[b, t * D:(t + 1) * D]).astype(np.float32)
                r = int(batch.indices[k])
                g[r] = (g.get(r, np.zeros(D, np.float32)) + term).astype(np.float32)
        want = E.copy()
        for r, gr in g.items():
            want[r] = fma(-LR, gr, E[r])
        assert np.array_equal(bits(res.tables[t]), bits(want)), t


@pytest.mark.parametrize("mode,optimizer", [("baseline", "sgd"), ("dedup", "sgd"), ("dedup", "rowwise-adagrad")])
def test_one_part_by_rows_is_by_parts(mode, optimizer):
    """(`refree` by rows takes its gradient rows in bag order, by parts by their rows: the
    two differ even on one part.)"""
    tr = movielens_batch(128, 2)
    rng = np.random.default_rng(3)
    tables = [rng.standard_normal((n, 16)).astype(np.float32) for n in tr.num_rows]
    grad = rng.standard_normal((128, 2 * 16)).astype(np.float32)
    kw = dict(poolings=["sum", "mean"], mode=mode, optimizer=optimizer)
    by_parts, by_rows = (step(tables, tr.batch, grad, LR, **kw, backward=b) for b in ("parts", "rows"))
    assert by_parts.counts["parts"] == 2
    for a, b in zip(by_parts.tables + (by_parts.state or []), by_rows.tables + (by_rows.state or [])):
        assert np.array_equal(bits(a), bits(b))
    assert by_parts.counts == by_rows.counts


def test_baseline_by_rows_is_by_parts_on_several_parts():
    """`baseline` updates per occurrence in index order, part after part: the same order."""
    batch, tables, grad = random_case(2)
    a, b = (step(tables, batch, grad, LR, mode="baseline", limits=SMALL, backward=w) for w in ("parts", "rows"))
    assert all(np.array_equal(bits(x), bits(y)) for x, y in zip(a.tables, b.tables))
    assert a.counts["update"] == b.counts["update"]


@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_each_distinct_row_is_updated_once_and_adagrad_takes_any_batch(mode):
    batch, tables, grad = random_case(4)
    distinct = sum(len(np.unique(batch.table_slice(t)[0])) for t in range(batch.num_tables))
    by_parts = step(tables, batch, grad, LR, mode=mode, limits=SMALL, backward="parts")
    by_rows = step(tables, batch, grad, LR, mode=mode, limits=SMALL)      # (the default)
    assert by_rows.counts["update"]["rmw"] == distinct < by_parts.counts["update"]["rmw"]
    assert by_rows.counts["forward"] == by_parts.counts["forward"]      # forward keeps its parts
    with pytest.raises(BatchError, match="row-wise Adagrad by parts"):
        step(tables, batch, grad, LR, mode=mode, limits=SMALL, optimizer="rowwise-adagrad", backward="parts")
    res = step(tables, batch, grad, LR, mode=mode, limits=SMALL, optimizer="rowwise-adagrad", backward="rows")
    assert res.counts["update"]["rmw"] == distinct
    for t, E in enumerate(tables):
        untouched = np.setdiff1d(np.arange(E.shape[0]), batch.table_slice(t)[0])
        assert np.array_equal(bits(res.tables[t][untouched]), bits(E[untouched]))
        assert not res.state[t][untouched].any()


@pytest.mark.parametrize("mode", ["dedup", "refree"])
@pytest.mark.parametrize("optimizer", ["sgd", "rowwise-adagrad"])
@pytest.mark.parametrize("pooling,weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_by_rows_depends_on_neither_the_parts_nor_the_groups(mode, optimizer, pooling, weighted):
    """By rows on a batch of several parts and row groups = by rows unlimited (one part and
    one group a table) = by rows with 8 groups a table: tables and Adagrad states, bit for
    bit; every row updated once whatever G."""
    batch, tables, grad = random_case(6, weighted=weighted)
    kw = dict(poolings=[pooling] * 2, mode=mode, optimizer=optimizer, backward="rows")
    small = step(tables, batch, grad, LR, **kw, limits=SMALL)
    whole = step(tables, batch, grad, LR, **kw, limits=PartLimits.unlimited())
    eight = step(tables, batch, grad, LR, **kw, limits=SMALL, groups=[8, 8])
    assert whole.counts["parts"] == 2 < small.counts["parts"]
    assert [row_groups(batch, t, SMALL) for t in range(2)] != [1, 1]
    for res in (whole, eight):
        for a, b in zip(small.tables + (small.state or []), res.tables + (res.state or [])):
            assert np.array_equal(bits(a), bits(b))
        assert res.counts["update"] == small.counts["update"]


@pytest.mark.parametrize("weighted", [False, True])
def test_row_groups_fit_and_their_counts(weighted):
    """G is the fewest groups (a power of two) that fit a part's distinct rows; each group reads the gradient row
    of every bag it touches; `dedup` merges lookups - distinct rows; `refree` shares
    prefixes within a group: counted by plain-Python loops over the groups."""
    batch, tables, grad = random_case(8, weighted=weighted)
    for G in (None, [4, 16]):
        for mode in ("dedup", "refree"):
            res = step(tables, batch, grad, LR, mode=mode, limits=SMALL, backward="rows", groups=G)
            for t in range(batch.num_tables):
                bags = table_bags(batch, t)
                rows = {r for bag in bags for r, _ in bag}
                n = row_groups(batch, t, SMALL) if G is None else G[t]
                def fits(n):
                    return all(len({r for r in rows if group(r, n) == g}) <= SMALL.max_distinct_rows for g in range(n))
                assert fits(n) and (G is not None or n > 1 and not fits(n // 2))
                reads = sum(len({b for b, bag in enumerate(bags) for r, _ in bag if group(r, n) == g}) for g in range(n))
                seqs = backward_sequences(bags, weighted, False, by_rows=True)
                adds = (sum(len(bag) for bag in bags) - len(rows) if mode == "dedup" else
                        sum(trie_adds([s for r, s in seqs.items() if group(r, n) == g]) for g in range(n)))
                b = res.table_counts[t]["backward"]
                assert (b["reads"], b["adds"], res.table_counts[t]["update"]["rmw"]) == (reads, adds, len(rows))


def test_too_few_row_groups_are_refused():
    batch, tables, grad = random_case(8)
    G = [row_groups(batch, t, SMALL) for t in range(2)]
    with pytest.raises(BatchError, match="row group") as e:
        step(tables, batch, grad, LR, limits=SMALL, backward="rows", groups=[G[0], G[1] // 2])
    assert e.value.code == ErrorCode.ROW_GROUP_TOO_LARGE and e.value.field == "groups of table 1"
    for bad in ([G[0], 3], [G[0]], [G[0], 1 << 16]):
        with pytest.raises(BatchError, match="groups"):
            step(tables, batch, grad, LR, limits=SMALL, backward="rows", groups=bad)
    with pytest.raises(BatchError, match="groups"):
        step(tables, batch, grad, LR, limits=SMALL, backward="parts", groups=G)


def test_a_row_used_more_often_than_a_part_holds_fits_one_group():
    """A group's pass takes its bags in chunks of a part's size, so its lookups are not
    limited: a row used more than max_lookups times is one group's."""
    batch = Batch(np.array([5] * 65 + [6], np.int64), np.array([0, 33, 66], np.int64), 2)
    tables, grad = [np.zeros((8, 4), np.float32)], np.ones((2, 4), np.float32)
    limits = PartLimits(max_bags=16, max_lookups=64, max_distinct_rows=24, max_bag_len=64)
    res = step(tables, batch, grad, LR, limits=limits, mode="dedup")
    assert res.row_groups == [1] and res.counts["update"]["rmw"] == 2 and res.counts["parts"] == 2
    # row 5: 65 terms of 1 summed exactly, one update; row 6: one term
    assert np.array_equal(res.tables[0][5], fma(-LR, np.full(4, 65, np.float32), np.zeros(4, np.float32)))
    assert np.array_equal(res.tables[0][6], np.full(4, -LR, np.float32))


def test_a_rows_group_is_the_xor_of_its_digits_and_spreads_over_the_ranks():
    """row_group_of against a plain loop; and, unlike r mod G, each group of consecutive rows
    holds rows of every residue mod 4 (the ranks interleave rows by their low bits)."""
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 1 << 40, 500)
    for b in range(0, 16):
        assert row_group_of(rows, 1 << b).tolist() == [group(int(r), 1 << b) for r in rows]
    for G in (2, 4, 8):
        g = row_group_of(np.arange(4096), G)
        assert all(set((np.flatnonzero(g == k) % 4).tolist()) == {0, 1, 2, 3} for k in range(G))
