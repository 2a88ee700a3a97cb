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
        skipped = slip.skipped_rows(batch)[0]
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
