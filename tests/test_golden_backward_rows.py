"""Backward by rows in the golden model (``step(..., backward="rows")``, docs/design.md
section 2, "Batches larger than the buffers"): each distinct row of a table merges every
occurrence in the whole batch and is updated once, whatever the parts.  Checked against an
independent per-row loop, against backward by parts where the two must agree (one part;
`baseline`, whose updates go in index order either way), and by its counts."""
import numpy as np
import pytest
from brute import refree_merged_grad_by_row_fold

from refree.golden.arith import fma
from refree.golden.batch import Batch
from refree.golden.errors import BatchError, ErrorCode
from refree.golden.model import step
from refree.golden.planner import PartLimits, partition
from refree.golden.traces import movielens_batch

SMALL = PartLimits(max_bags=16, max_lookups=64, max_distinct_rows=24, max_bag_len=16)
LR = np.float32(0.05)


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


@pytest.mark.parametrize("mode,optimizer", [("baseline", "sgd"), ("dedup", "sgd"), ("refree", "sgd"),
                                            ("dedup", "rowwise-adagrad"), ("refree", "rowwise-adagrad")])
def test_one_part_by_rows_is_by_parts(mode, optimizer):
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
    by_parts = step(tables, batch, grad, LR, mode=mode, limits=SMALL)
    by_rows = step(tables, batch, grad, LR, mode=mode, limits=SMALL, backward="rows")
    assert by_rows.counts["update"]["rmw"] == distinct < by_parts.counts["update"]["rmw"]
    assert by_rows.counts["forward"] == by_parts.counts["forward"]      # forward keeps its parts
    with pytest.raises(BatchError) as e:
        step(tables, batch, grad, LR, mode=mode, limits=SMALL, optimizer="rowwise-adagrad")
    assert e.value.code == ErrorCode.BATCH_TOO_LARGE_FOR_ADAGRAD
    res = step(tables, batch, grad, LR, mode=mode, limits=SMALL, optimizer="rowwise-adagrad", backward="rows")
    assert res.counts["update"]["rmw"] == distinct
    for t, E in enumerate(tables):
        untouched = np.setdiff1d(np.arange(E.shape[0]), batch.table_slice(t)[0])
        assert np.array_equal(bits(res.tables[t][untouched]), bits(E[untouched]))
        assert not res.state[t][untouched].any()


@pytest.mark.parametrize("mode", ["dedup", "refree"])
@pytest.mark.parametrize("optimizer", ["sgd", "rowwise-adagrad"])
@pytest.mark.parametrize("pooling,weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_by_rows_does_not_depend_on_the_forward_parts(mode, optimizer, pooling, weighted):
    """By rows on a batch of several parts = by parts on the same batch unlimited (one part
    a table): tables, Adagrad states and backward counts, bit for bit."""
    batch, tables, grad = random_case(6, weighted=weighted)
    kw = dict(poolings=[pooling] * 2, mode=mode, optimizer=optimizer)
    by_rows = step(tables, batch, grad, LR, **kw, limits=SMALL, backward="rows")
    whole = step(tables, batch, grad, LR, **kw, limits=PartLimits.unlimited())
    assert whole.counts["parts"] == 2 < by_rows.counts["parts"]
    for a, b in zip(by_rows.tables + (by_rows.state or []), whole.tables + (whole.state or [])):
        assert np.array_equal(bits(a), bits(b))
    assert (by_rows.counts["backward"], by_rows.counts["update"]) == (whole.counts["backward"], whole.counts["update"])


@pytest.mark.parametrize("pooling,weighted", [("sum", False), ("mean", False), ("sum", True)])
def test_refree_merges_each_row_in_the_designs_key_order_over_whole_bags(pooling, weighted):
    """`refree` by rows against the plain-Python reference of tests/brute.py over the whole
    batch: each row's keys (b, c') in the design's key order over whole bags, g = +0,
    g = fma(c', G[b], g); then E = fma(-lr, g, E)."""
    batch, tables, grad = random_case(7, weighted=weighted)
    res = step(tables, batch, grad, LR, poolings=[pooling] * 2, mode="refree", limits=SMALL, backward="rows")
    D = tables[0].shape[1]
    for t, E in enumerate(tables):
        want = E.copy()
        for r, g in refree_merged_grad_by_row_fold(grad[:, t * D:(t + 1) * D], batch, t, pooling).items():
            want[r] = fma(-LR, g, E[r])
        assert np.array_equal(bits(res.tables[t]), bits(want)), t


def test_an_unknown_backward_is_refused():
    batch, tables, grad = random_case(5)
    with pytest.raises(BatchError, match="backward"):
        step(tables, batch, grad, LR, backward="bags")
