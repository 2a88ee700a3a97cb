"""Tests of the trace sources (golden/traces.py)."""
import csv
import importlib.resources
import math
import time

import numpy as np
import pytest

from refree.golden import traces
from refree.golden.batch import Batch, save_batch
from refree.golden.errors import BatchError
from refree.golden.traces import (META_LAWS, META_SETS, TRACE_NAMES, Trace, expected_reuse,
                                  fit_meta_law, load_trace, make_trace, meta_batch,
                                  meta_lookups_per_table, meta_pooling_factor, movielens_batch,
                                  uniform_batch, zipf_batch)

# Reuse bins of the Meta data file: bin k holds reuse in (EDGES[k], EDGES[k+1]].
EDGES = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
                  32768, np.inf])

# How closely the fitted Meta laws reproduce the published statistics (absolute, per bin).
TOL_UNIQUE_ROWS = 0.0125
TOL_INDICES = 0.025
TOL_UNIQUE_COUNT = 0.01     # relative


def bag_lengths(batch):
    return np.diff(batch.offsets).reshape(batch.num_tables, batch.batch_size)


def bags(batch, t):
    return [batch.indices[slice(*batch.bag_range(t, b))].tolist()
            for b in range(batch.batch_size)]


def published(set_name):
    return traces._meta_set(set_name)


# -- every source --------------------------------------------------------------------------
@pytest.mark.parametrize("name, num_tables", [("uniform", 3), ("zipf", 3), ("meta", 2),
                                              ("movielens", 1), ("movielens", 3)])
def test_shape_and_range(name, num_tables):
    tr = make_trace(name, 64, num_tables, seed=5, **({"num_rows": 5000} if name == "meta" else {}))
    assert isinstance(tr, Trace) and isinstance(tr.batch, Batch)
    b = tr.batch
    assert b.batch_size == 64 and b.num_tables == num_tables
    assert len(b.offsets) == num_tables * 64 + 1 and b.offsets[-1] == len(b.indices)
    assert len(tr.num_rows) == num_tables
    for t in range(num_tables):
        idx, _, _ = b.table_slice(t)
        assert idx.dtype == np.int64 and (idx >= 0).all() and (idx < tr.num_rows[t]).all()


@pytest.mark.parametrize("name", ["uniform", "zipf", "meta"])
def test_seeded_determinism(name):
    kw = dict(weighted=True, **({"num_rows": 3000} if name == "meta" else {}))
    a, b, c = (make_trace(name, 128, 3, seed=s, **kw).batch for s in (7, 7, 8))
    for field in ("indices", "offsets", "per_sample_weights"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not (len(a.indices) == len(c.indices) and np.array_equal(a.indices, c.indices))


@pytest.mark.parametrize("source", [uniform_batch, zipf_batch])
def test_bag_lengths(source):
    fixed = source(200, 2, 100, 3, seed=1).batch
    assert (bag_lengths(fixed) == 3).all()
    ranged = bag_lengths(source(2000, 2, 100, (0, 4), seed=1).batch)
    assert ranged.min() == 0 and ranged.max() == 4      # both ends of the inclusive range
    assert set(np.unique(ranged)) == {0, 1, 2, 3, 4}


def test_weights():
    b = uniform_batch(500, 2, 50, (1, 5), seed=3, weighted=True).batch
    w = b.per_sample_weights
    assert w.dtype == np.float32 and len(w) == len(b.indices)
    assert (w >= 0).all() and (w < 1).all() and 0.4 < w.mean() < 0.6
    assert uniform_batch(500, 2, 50, (1, 5), seed=3).batch.per_sample_weights is None


def test_rows_per_table():
    tr = zipf_batch(500, 2, [7, 100_000], 10, seed=0)
    assert tr.num_rows == (7, 100_000)
    assert tr.batch.table_slice(0)[0].max() < 7
    assert tr.batch.table_slice(1)[0].max() >= 7


@pytest.mark.parametrize("call, message", [
    (lambda: uniform_batch(0, 1, 10, 1, 0), "batch_size: must be a positive integer, not 0"),
    (lambda: uniform_batch(4, 2, [10], 1, 0),
     r"num_rows: must give one size per table \(2\), not 1"),
    (lambda: uniform_batch(4, 1, 0, 1, 0), r"num_rows\[0\]: must be a positive integer, not 0"),
    (lambda: uniform_batch(4, 1, 10, (3, 1), 0),
     r"bag_len: range must satisfy 0 <= lo <= hi, not \(3, 1\)"),
    (lambda: uniform_batch(4, 1, 10, -1, 0), "bag_len: must be a non-negative integer or a"),
    (lambda: zipf_batch(4, 1, 10, 1, 0, alpha=-1), "alpha: must be a finite number >= 0, not -1"),
    (lambda: meta_batch(4, 1, 0, set_name="2023"), "set_name: must be one of"),
    (lambda: movielens_batch(4, num_tables=4),
     "num_tables: must be 1, 2 or 3 for movielens, not 4"),
    (lambda: movielens_batch(100_000, batch_index=1),
     "batch_index: batch 1 of 100000 samples ends at sample 200000"),
    (lambda: make_trace("criteo", 4, 1), "trace: must be one of"),
])
def test_bad_arguments(call, message):
    with pytest.raises(BatchError, match=message):
        call()


# -- uniform and Zipf ------------------------------------------------------------------------
def top_share(indices, num_rows, fraction=0.01):
    counts = np.sort(np.bincount(indices, minlength=num_rows))[::-1]
    return counts[:int(num_rows * fraction)].sum() / counts.sum()


def test_zipf_is_skewed_and_uniform_is_not():
    z = make_trace("zipf", 4096, 1, seed=2).batch.indices
    u = make_trace("uniform", 4096, 1, seed=2).batch.indices
    # Bounded Zipf(1.05) over 10,000 ranks puts 59% of the mass on the top 100.
    assert top_share(z, 10_000) > 0.45
    assert top_share(u, 10_000) < 0.03


def test_zipf_follows_its_law():
    n, alpha = 1000, 1.3
    idx = zipf_batch(2000, 1, n, 20, seed=4, alpha=alpha).batch.indices
    p = np.arange(1, n + 1) ** -alpha
    p /= p.sum()
    counts = np.sort(np.bincount(idx, minlength=n))[::-1]
    expected = p[:5] * len(idx)
    assert np.all(np.abs(counts[:5] - expected) < 5 * np.sqrt(expected))


def test_zipf_hot_rows_are_scattered():
    b = zipf_batch(4096, 2, 10_000, 10, seed=6).batch
    hottest = [np.argsort(np.bincount(b.table_slice(t)[0], minlength=10_000))[::-1][:20]
               for t in range(2)]
    assert hottest[0].max() > 1000 and hottest[1].max() > 1000      # not the first rows
    assert set(hottest[0][:5]) != set(hottest[1][:5])               # a permutation per table


# -- Meta ------------------------------------------------------------------------------------
@pytest.mark.parametrize("set_name", META_SETS)
def test_meta_law_matches_published_histograms(set_name):
    st = published(set_name)
    h = expected_reuse(META_LAWS[set_name].probabilities(), meta_lookups_per_table(set_name))
    assert np.abs(h.unique_rows - st["unique_rows"]).max() < TOL_UNIQUE_ROWS
    assert np.abs(h.indices - st["indices"]).max() < TOL_INDICES
    unique_per_table = st["unique_rows_per_batch"] / st["tables"]
    assert abs(h.unique / unique_per_table - 1) < TOL_UNIQUE_COUNT


def test_expected_reuse_by_hand():
    # Two rows, probabilities 3/4 and 1/4, 8 lookups: sum the Poisson terms directly.
    lam = np.array([6.0, 2.0])
    k = np.arange(100)
    pmf = np.exp(-lam[:, None]) * lam[:, None] ** k / np.array([math.factorial(i) for i in k],
                                                                dtype=float)
    in_bin = (k > EDGES[:-1, None]) & (k <= EDGES[1:, None])        # (bin, k)
    rows = (pmf @ in_bin.T).sum(axis=0)
    looks = ((pmf * k) @ in_bin.T).sum(axis=0)
    h = expected_reuse([0.75, 0.25], 8)
    assert np.allclose(h.unique_rows, rows / rows.sum(), atol=1e-12)
    assert np.allclose(h.indices, looks / looks.sum(), atol=1e-12)
    assert h.unique == pytest.approx(2 - np.exp(-6) - np.exp(-2))
    # A group of rows counts as that many rows of the same probability.
    g = expected_reuse([0.25, 0.25], 8, multiplicity=[1, 3])
    e = expected_reuse([0.25] * 4, 8)
    assert np.allclose(g.unique_rows, e.unique_rows) and np.allclose(g.indices, e.indices)


def sampled_reuse(counts):
    """Reuse histograms of one batch from per-row lookup counts."""
    c = counts[counts > 0]
    k = np.searchsorted(EDGES, c, side="left") - 1
    return (np.bincount(k, minlength=17) / len(c),
            np.bincount(k, weights=c, minlength=17) / c.sum(), len(c))


@pytest.mark.parametrize("set_name", META_SETS)
def test_expected_reuse_agrees_with_sampled_batches(set_name):
    # Exact multinomial batches at the published size, against the Poisson expectation.
    p = META_LAWS[set_name].probabilities()
    n = round(meta_lookups_per_table(set_name))
    rng = np.random.default_rng(0)
    rows, looks, unique = (np.mean(v, axis=0) for v in
                           zip(*(sampled_reuse(rng.multinomial(n, p)) for _ in range(4))))
    h = expected_reuse(p, n)
    assert np.abs(rows - h.unique_rows).max() < 0.003
    # Bins up to reuse 64 hold thousands of rows, so a sample matches them closely; the
    # high bins hold a few rows each and fluctuate more.
    assert np.abs(looks - h.indices)[:7].max() < 0.002
    assert np.abs(looks - h.indices).max() < 0.01
    assert abs(unique / h.unique - 1) < 0.005


@pytest.mark.parametrize("set_name", META_SETS)
def test_fit_reproduces_stored_law(set_name):
    fitted, stored = fit_meta_law(set_name), META_LAWS[set_name]
    for field in ("s_head", "s_tail", "knee"):
        assert getattr(fitted, field) == pytest.approx(getattr(stored, field), rel=1e-3)
    assert fitted.q == pytest.approx(stored.q, abs=1e-3)
    assert fitted.rows == pytest.approx(stored.rows, rel=1e-3)


def test_meta_law_probabilities():
    law = META_LAWS["2022_t788_bs131072"]
    full = law.probabilities()
    assert len(full) == law.rows and full.sum() == pytest.approx(1)
    assert (np.diff(full) <= 0).all()       # ranks are hottest first
    short = law.probabilities(1000)
    assert np.allclose(short, full[:1000] / full[:1000].sum(), rtol=1e-12)
    assert len(law.probabilities(law.rows + 5)) == law.rows


@pytest.mark.parametrize("set_name", META_SETS)
def test_meta_batch_draws_from_the_law(set_name):
    B, T = 2048, 3
    tr = meta_batch(B, T, seed=11, set_name=set_name)
    law = META_LAWS[set_name]
    assert tr.num_rows == (law.rows,) * T
    lengths = bag_lengths(tr.batch)
    pf = meta_pooling_factor(set_name)
    assert lengths.min() >= 1
    assert lengths.mean() == pytest.approx(pf, rel=0.04)
    p = law.probabilities()
    for t in range(T):
        idx = tr.batch.table_slice(t)[0]
        # Smaller batches draw from the same law: unique rows as the law predicts for them.
        expected_unique = np.sum(-np.expm1(-len(idx) * p))
        assert len(np.unique(idx)) == pytest.approx(expected_unique, rel=0.02)
        hottest = np.bincount(idx).max()
        assert hottest == pytest.approx(p[0] * len(idx), abs=5 * np.sqrt(p[0] * len(idx)))


def test_meta_batch_small_tables():
    tr = meta_batch(512, 2, seed=1, num_rows=[300, 10**6])
    assert tr.num_rows == (300, 10**6)
    assert tr.batch.table_slice(0)[0].max() < 300
    # A table larger than the law: the extra rows stay cold.
    assert len(np.unique(tr.batch.table_slice(1)[0])) <= META_LAWS["2022_t788_bs131072"].rows


# -- MovieLens -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def movielens_reference():
    """An independent reading of ratings.csv: samples and dense maps, in plain Python."""
    path = (importlib.resources.files("refree.golden") / "data" / "movielens-latest-small"
            / "ratings.csv")
    with path.open() as f:
        rows = [(int(r["timestamp"]), int(r["userId"]), int(r["movieId"]), float(r["rating"]))
                for r in csv.DictReader(f)]
    rows.sort()
    movie_map, user_map = {}, {}
    for _, u, m, _ in rows:
        movie_map.setdefault(m, len(movie_map))
        user_map.setdefault(u, len(user_map))
    return rows, movie_map, user_map


def reference_bags(reference, first, count):
    """Bags of samples [first, first+count): history, user, liked history."""
    rows, movie_map, user_map = reference
    seen = {}
    out = []
    for k, (_, u, m, r) in enumerate(rows[:first + count]):
        history = seen.setdefault(u, [])
        if k >= first:
            liked = [mv for mv, rt in history if rt >= 4.0]
            out.append(([movie_map[mv] for mv, _ in history[-20:]], [user_map[u]],
                        [movie_map[mv] for mv in liked[-20:]]))
        history.append((m, r))
    return out


# Batch 93 holds samples 95513 and 95514: two users rating at the same second, the one with
# the smaller userId rating the larger movieId, so only the full sort key orders them.
@pytest.mark.parametrize("batch_index", [0, 93])
def test_movielens_matches_direct_reading(movielens_reference, batch_index):
    B = 1024
    tr = movielens_batch(B, num_tables=3, batch_index=batch_index)
    _, movie_map, user_map = movielens_reference
    assert tr.num_rows == (len(movie_map), len(user_map), len(movie_map)) == (9724, 610, 9724)
    expected = reference_bags(movielens_reference, batch_index * B, B)
    for t in range(3):
        assert bags(tr.batch, t) == [e[t] for e in expected]


def test_movielens_samples_by_hand(movielens_reference):
    rows, movie_map, _ = movielens_reference
    b = movielens_batch(1024, 1, batch_index=0).batch
    assert bags(b, 0)[0] == []                          # the first rating has no history
    # Sample 700: find the same user's earlier ratings by scanning the sorted rows.
    _, user, _, _ = rows[700]
    earlier = [m for _, u, m, _ in rows[:700] if u == user]
    assert bags(b, 0)[700] == [movie_map[m] for m in earlier[-20:]]
    assert len(earlier) > 20                            # so the cut to 20 is exercised


def test_movielens_remap_over_whole_dataset(movielens_reference):
    rows, movie_map, _ = movielens_reference
    # A movie enters history bags once its rater rates something after it.
    last_of_user = {u: k for k, (_, u, _, _) in enumerate(rows)}
    in_history = {movie_map[m] for k, (_, u, m, _) in enumerate(rows) if k < last_of_user[u]}
    whole = movielens_batch(len(rows), 1).batch
    assert set(np.unique(whole.indices).tolist()) == in_history


def test_movielens_parse_is_fast():
    traces._movielens.cache_clear()
    start = time.perf_counter()
    movielens_batch(16)
    assert time.perf_counter() - start < 2.0


# -- files and the dispatcher ----------------------------------------------------------------
def test_load_trace(tmp_path):
    indices = np.array([3, 0, 7, 2, 2], dtype=np.int64)
    offsets = np.array([0, 2, 3, 3, 3, 5], dtype=np.int64)     # B=1, T=5
    batch = Batch(indices, offsets, batch_size=1,
                  per_sample_weights=np.ones(5, dtype=np.float32))
    save_batch(tmp_path / "b.npz", batch)
    tr = load_trace(tmp_path / "b.npz")
    assert tr.num_rows == (4, 8, 1, 1, 3)                     # max + 1; empty tables get 1
    assert np.array_equal(tr.batch.indices, indices)
    assert np.array_equal(tr.batch.per_sample_weights, batch.per_sample_weights)


def test_load_trace_rejects_negative_index(tmp_path):
    save_batch(tmp_path / "b.npz", Batch(np.array([-1, 2], dtype=np.int64),
                                         np.array([0, 2], dtype=np.int64), batch_size=1))
    with pytest.raises(BatchError, match="outside table 0"):
        load_trace(tmp_path / "b.npz")


def test_make_trace_defaults():
    tr = make_trace("uniform", 300, 2, seed=1)
    assert tr.num_rows == (10_000, 10_000)
    lengths = bag_lengths(tr.batch)
    assert lengths.min() == 1 and lengths.max() == 20
    assert make_trace("meta", 8, 2).num_rows == (META_LAWS["2022_t788_bs131072"].rows,) * 2
    assert np.array_equal(make_trace("movielens", 8, 1, seed=3).batch.indices,
                          movielens_batch(8).batch.indices)
    assert set(TRACE_NAMES) == {"uniform", "zipf", "meta", "movielens"}
