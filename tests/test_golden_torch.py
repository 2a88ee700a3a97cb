"""The golden model against PyTorch: `baseline` bit-identical, `dedup`/`refree` close,
row-wise Adagrad against a float64 reference over chained steps."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from refree.golden.batch import Batch
from refree.golden.model import step
from refree.golden.planner import PartLimits

pytestmark = pytest.mark.torch

if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
    pytest.skip("PyTorch's portable kernels round add_ differently (docs/design.md)", allow_module_level=True)


def random_case(seed, T=3, B=16, D=13, rows=(40, 7, 100), max_len=9, weighted=False):
    rng = np.random.default_rng(seed)
    idx, offs = [], [0]
    for t in range(T):
        for b in range(B):
            n = int(rng.integers(0, max_len + 1))
            # a small hot set makes rows repeat within and across bags
            hot = rng.integers(0, min(rows[t], 5), n)
            cold = rng.integers(0, rows[t], n)
            idx.append(np.where(rng.random(n) < 0.5, hot, cold))
            offs.append(offs[-1] + n)
    idx = np.concatenate(idx).astype(np.int64)
    w = rng.standard_normal(len(idx)).astype(np.float32) if weighted else None
    batch = Batch(idx, np.array(offs, np.int64), B, w)
    tables = [rng.standard_normal((rows[t], D)).astype(np.float32) for t in range(T)]
    grad = rng.standard_normal((B, T * D)).astype(np.float32)
    return batch, tables, grad


def torch_step(batch, tables, grad, lr, poolings):
    """nn.EmbeddingBag(sparse=True) per table, torch.optim.SGD, the upstream gradient given."""
    B, D = batch.batch_size, tables[0].shape[1]
    bags, outs = [], []
    for t, E in enumerate(tables):
        bag = torch.nn.EmbeddingBag(E.shape[0], D, mode=poolings[t], sparse=True,
                                    include_last_offset=True)
        with torch.no_grad():
            bag.weight.copy_(torch.from_numpy(E))
        idx, offs, w = batch.table_slice(t)
        outs.append(bag(torch.from_numpy(idx), torch.from_numpy(offs),
                        per_sample_weights=None if w is None else torch.from_numpy(w)))
        bags.append(bag)
    pooled = torch.cat(outs, dim=1)
    opt = torch.optim.SGD([b.weight for b in bags], lr=lr)
    opt.zero_grad()
    pooled.backward(torch.from_numpy(grad))
    opt.step()
    return pooled.detach().numpy(), [b.weight.detach().numpy() for b in bags]


def same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    both_nan = np.isnan(a) & np.isnan(b)
    return np.array_equal(np.where(both_nan, 0, a).view(np.uint32), np.where(both_nan, 0, b).view(np.uint32))


CASES = [("sum", False), ("mean", False), ("sum", True)]


@pytest.mark.parametrize("pooling,weighted", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_baseline_step_is_bit_identical_to_pytorch(pooling, weighted, seed):
    batch, tables, grad = random_case(seed, weighted=weighted)
    poolings = [pooling] * 3
    lr = 0.05 + 0.01 * seed                 # not exactly representable: rounded once
    ref_pooled, ref_tables = torch_step(batch, tables, grad, lr, poolings)
    res = step(tables, batch, grad, lr, poolings=poolings, mode="baseline")
    assert same_bits(res.pooled, ref_pooled)
    for t in range(3):
        assert same_bits(res.tables[t], ref_tables[t]), f"table {t}"


def test_baseline_mixed_poolings_and_special_values():
    batch, tables, grad = random_case(11)
    tables[0][1] = [-0.0, np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 0.0, 1, 2, 3, 4, 5, 6]
    tables[0][2, :3] = [np.nan, -np.inf, 1.17e-38]
    grad[0, :4] = [1e-40, -0.0, np.inf, 2.5e-39]
    poolings = ["sum", "mean", "sum"]
    ref_pooled, ref_tables = torch_step(batch, tables, grad, 0.3, poolings)
    res = step(tables, batch, grad, 0.3, poolings=poolings, mode="baseline")
    assert same_bits(res.pooled, ref_pooled)
    assert all(same_bits(a, b) for a, b in zip(res.tables, ref_tables))


@pytest.mark.parametrize("mode", ["dedup", "refree"])
@pytest.mark.parametrize("pooling,weighted", CASES)
def test_dedup_and_refree_match_pytorch_within_tolerance(mode, pooling, weighted):
    """Merging changes only the rounding order: relative error stays within a few ulps
    of the magnitudes summed (tolerance: 1e-5 relative to the largest term)."""
    batch, tables, grad = random_case(5, weighted=weighted)
    poolings = [pooling] * 3
    ref_pooled, ref_tables = torch_step(batch, tables, grad, 0.1, poolings)
    res = step(tables, batch, grad, 0.1, poolings=poolings, mode=mode)
    np.testing.assert_allclose(res.pooled, ref_pooled, rtol=1e-5, atol=1e-5)
    for a, b in zip(res.tables, ref_tables):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_split_batch_sgd_matches_pytorch_within_tolerance(mode):
    batch, tables, grad = random_case(9)
    limits = PartLimits(max_bags=5, max_lookups=30, max_distinct_rows=20, max_bag_len=64)
    ref_pooled, ref_tables = torch_step(batch, tables, grad, 0.1, ["sum"] * 3)
    res = step(tables, batch, grad, 0.1, mode=mode, limits=limits)
    assert res.counts["parts"] > 3
    np.testing.assert_allclose(res.pooled, ref_pooled, rtol=1e-5, atol=1e-5)
    for a, b in zip(res.tables, ref_tables):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def adagrad_f64(tables, state, batch, grad, lr, eps, poolings):
    """Row-wise Adagrad in float64 from the definition (FBGEMM's EXACT_ROWWISE_ADAGRAD)."""
    B, D = batch.batch_size, tables[0].shape[1]
    for t, E in enumerate(tables):
        idx, offs, w = batch.table_slice(t)
        g = {}
        for b in range(B):
            lo, hi = offs[b], offs[b + 1]
            for i in range(lo, hi):
                coef = (w[i] if w is not None else 1.0) / ((hi - lo) if poolings[t] == "mean" else 1)
                g[idx[i]] = g.get(idx[i], 0) + coef * grad[b, t * D:(t + 1) * D].astype(np.float64)
        for r, gr in g.items():
            state[t][r] += np.mean(gr * gr)
            E[r] -= lr / (np.sqrt(state[t][r]) + eps) * gr


@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_rowwise_adagrad_chained_steps_match_float64(mode):
    batch, tables, grad = random_case(3, weighted=True)
    poolings = ["sum"] * 3
    ref_t = [E.astype(np.float64) for E in tables]
    ref_s = [np.zeros(E.shape[0]) for E in tables]
    cur, state = tables, None
    rng = np.random.default_rng(0)
    for k in range(4):
        g = (grad * np.float32(1 + k)).astype(np.float32) if k else grad
        res = step(cur, batch, g, 0.05, poolings=poolings, mode=mode, optimizer="rowwise-adagrad",
                   eps=1e-8, state=state)
        adagrad_f64(ref_t, ref_s, batch, g, 0.05, 1e-8, poolings)
        cur, state = res.tables, res.state
    for a, b in zip(cur, ref_t):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(state, ref_s):
        np.testing.assert_allclose(a, b, rtol=1e-5)
