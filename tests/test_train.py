"""refree train: the harness learns, and the project's step trains as PyTorch's does."""
import json

import numpy as np
import pytest

from refree.gen.cli import main
from refree.gen.train import TrainConfig, log_loss, roc_auc, train

STEPS, HELD_OUT = 300, 4000          # 38,400 training samples; a few seconds a mode


@pytest.mark.torch
def test_the_projects_step_trains_as_pytorchs():
    """Held-out AUC well above chance for nn.EmbeddingBag + SGD and for the project's step in
    `baseline` (PyTorch's order) and `refree` (another order of the sums: within 0.01), the
    same 300 batches from the same start."""
    got = {m: train(TrainConfig(mode=m, max_steps=STEPS, test_samples=HELD_OUT)) for m in ("torch", "baseline", "refree")}
    auc = {m: r["epochs"][0]["test_auc"] for m, r in got.items()}
    assert all(a > 0.58 for a in auc.values()), auc
    assert abs(auc["baseline"] - auc["torch"]) <= 1e-3 and abs(auc["refree"] - auc["torch"]) <= 0.01, auc
    for a, b in zip(got["baseline"]["tables"], got["torch"]["tables"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_auc_and_log_loss():
    y = np.array([0, 0, 1, 1, 1], bool)
    assert roc_auc([0.1, 0.4, 0.35, 0.8, 0.9], y) == pytest.approx(5 / 6)      # one pair out of order
    assert roc_auc([0.5] * 5, y) == 0.5 and np.isnan(roc_auc([0.1, 0.2], [True, True]))
    assert log_loss([0.5] * 5, y) == pytest.approx(np.log(2))


def test_the_command(capsys):
    assert main(["train", "--mode", "torch", "--max-steps", "20", "--test-samples", "500", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["mode"] == "torch" and rec["epochs"][0]["steps"] == 20 and 0 < rec["epochs"][0]["test_auc"] < 1
    for bad in (["--max-steps", "0"], ["--epochs", "0"], ["--lr", "-1"], ["--rtl-steps", "-1"],
                ["--rtl-steps", "2", "--mode", "torch"], ["--config", "x.toml"],
                ["--rtl-steps", "2", "--config", "/nonexistent.toml"]):
        with pytest.raises(SystemExit) as e:
            main(["train", *bad])
        assert e.value.code == 2
    with pytest.raises(ValueError):
        TrainConfig(mode="fast")


@pytest.mark.slow
def test_rtl_steps_with_skipping_are_the_golden_steps():
    """``--rtl-steps``: the last steps of a run with Slipstream on the chip (a D = 16 chip
    with a stale set, a build of its own), each bit for bit the golden step's (the run stops
    otherwise), with stale lookups skipped on the chip and none left out of its set."""
    res = train(TrainConfig(max_steps=8, test_samples=256, skip=0.3, skip_window=3, rtl_steps=2))
    assert len(res["rtl"]) == 2 and res["slipstream"]["skipped_updates"] > 0
    assert all(r["stale_skipped"] > 0 and r["stale_left_out"] == 0 for r in res["rtl"])
