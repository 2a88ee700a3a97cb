"""Skipping stale updates (golden/slipstream.py) and its place in the training harness."""
import numpy as np
import pytest

from refree.golden.batch import Batch
from refree.golden.slipstream import Slipstream, search_threshold


def test_the_threshold_search_takes_the_target_of_the_weights():
    changes = np.array([0.5, 0.1, 0.3, 0.2, 0.4])
    weights = np.array([1, 4, 1, 2, 2])              # 10 updates: 0.1 carries 4, 0.2 two more
    T = search_threshold(changes, weights, 0.6)
    assert 0.2 < T <= 0.3 + 1e-9 and weights[changes < T].sum() == 6
    assert search_threshold(changes, weights, 0.0) == 0.0
    assert weights[changes < search_threshold(changes, weights, 0.95)].sum() == 10
    with pytest.raises(ValueError):
        search_threshold(changes, weights, 1.0)


def one_table_batch(rows):
    rows = np.asarray(rows, np.int64)
    return Batch(rows, np.arange(len(rows) + 1, dtype=np.int64), len(rows))


def test_stale_rows_keep_their_values_and_stay_stale_cold_rows_never_skip():
    """Rows 0..3 hot (looked up in the profile), row 9 cold; over the first window (2 steps,
    nothing skipped) rows 0 and 1 barely move, 2 and 3 move a lot: with a target of half the
    updates, 0 and 1 go stale and are skipped from then on, whatever they would have done."""
    profile = [one_table_batch([0, 1, 2, 3, 0, 1, 2, 3])]
    slip = Slipstream(profile, [10], 4, 0.5, window=2, sample=1.0, fraction=1.0, budget_bytes=4 * 4 * 4)
    assert [r.tolist() for r in slip.hot] == [[0, 1, 2, 3]]
    E = np.zeros((10, 4), np.float32)
    slip.begin([E])
    moves = {0: 1e-4, 1: 2e-4, 2: 1.0, 3: 2.0, 9: 5.0}
    batch = one_table_batch([0, 1, 2, 3, 9])
    for k in range(5):
        skipped = slip.count_updates(batch)[0]
        new = E.copy()
        for r, d in moves.items():
            if r not in skipped:
                new[r] += d
        E = new
        slip.end_step([E])
        if k < 2:
            assert len(skipped) == 0
        else:
            assert sorted(skipped.tolist()) == [0, 1]
    assert 2e-4 < slip.threshold <= 1.0
    assert np.allclose(E[0], 2e-4) and np.allclose(E[3], 10.0) and np.allclose(E[9], 25.0)
    rep = slip.report(dim=4)
    assert rep["skipped_updates"] == 6 and rep["row_updates"] == 25 and rep["beats_saved"] == 2 * 1 * 6


@pytest.mark.torch
def test_a_skip_target_of_zero_is_the_exact_run():
    from refree.gen.train import TrainConfig, train
    exact = train(TrainConfig(max_steps=60, test_samples=300))
    none = train(TrainConfig(max_steps=60, test_samples=300, skip=0.0, skip_window=20))
    assert none["slipstream"]["skipped_updates"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(exact["tables"], none["tables"]))
    some = train(TrainConfig(max_steps=60, test_samples=300, skip=0.4, skip_window=20))
    assert some["slipstream"]["skipped_updates"] > 0
    assert not all(np.array_equal(a, b) for a, b in zip(exact["tables"], some["tables"]))


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_the_step_skips_the_stale_rows_updates_and_counts_what_it_does(mode):
    """golden step(stale=...): the stale rows keep their values, every other row gets what
    the step without skipping gives it (bit for bit: a row's merge is its own, in bag
    order), forward is untouched; the counts drop by the stale rows' updates (baseline: per
    lookup) and merge additions, and by the gradient rows of bags left with no other row."""
    from refree.golden.model import step
    from refree.golden.errors import BatchError
    from refree.golden.planner import PartLimits
    rng = np.random.default_rng(3)
    rows, D, B = 40, 16, 24
    idx = rng.zipf(1.3, 150) % rows
    offs = np.concatenate([[0], np.sort(rng.integers(0, len(idx), B - 1)), [len(idx)]]).astype(np.int64)
    batch = Batch(idx.astype(np.int64), offs, B)
    tables = [rng.standard_normal((rows, D)).astype(np.float32)]
    grad = rng.standard_normal((B, D)).astype(np.float32)
    stale = np.zeros(rows, bool)
    stale[np.unique(idx)[::3]] = True                   # a third of the rows looked up
    limits = PartLimits(max_bags=8, max_lookups=64, max_distinct_rows=16)
    exact = step(tables, batch, grad, 0.1, mode=mode, limits=limits)
    got = step(tables, batch, grad, 0.1, mode=mode, limits=limits, stale=[stale])
    assert np.array_equal(got.pooled.view(np.uint32), exact.pooled.view(np.uint32))
    assert np.array_equal(got.tables[0][stale].view(np.uint32), tables[0][stale].view(np.uint32))
    assert np.array_equal(got.tables[0][~stale].view(np.uint32), exact.tables[0][~stale].view(np.uint32))
    assert got.counts["forward"] == exact.counts["forward"]
    live = ~stale[idx]
    if mode == "baseline":
        assert got.counts["update"]["rmw"] == got.counts["backward"]["reads"] == int(live.sum())
    else:
        assert got.counts["update"]["rmw"] == len(np.unique(idx[live]))
        # (by rows: a bag's gradient row is read in each group pass that holds one of its rows)
        from refree.golden.planner import row_group_of
        bags, group = np.repeat(np.arange(B), np.diff(offs)), row_group_of(idx, exact.row_groups[0])
        assert exact.row_groups[0] > 1
        assert got.counts["backward"]["reads"] == len(set(zip(bags[live], group[live])))
    nothing = step(tables, batch, grad, 0.1, mode=mode, limits=limits, stale=[np.zeros(rows, bool)])
    assert nothing.counts == exact.counts
    assert np.array_equal(nothing.tables[0].view(np.uint32), exact.tables[0].view(np.uint32))
    for bad in ([stale[:-1]], [stale.astype(np.int8)], [stale, stale]):
        with pytest.raises(BatchError, match="stale"):
            step(tables, batch, grad, 0.1, mode=mode, limits=limits, stale=bad)
