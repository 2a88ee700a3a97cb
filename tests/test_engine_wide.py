"""The engine with a wide fold datapath at D = 64 on generated Verilog (cocotb, Verilator):
``fold_lanes = 64``, the default configuration's (a row in one wide beat of four memory
beats), and 32 (rows of two wide beats; the staging rows striped, :mod:`refree.hw.engine.staging`), results split back into memory beats (:mod:`refree.hw.engine.result_splitter`).  Training steps in the three
modes with mean and sum pooling, weights, several parts and row-wise Adagrad, against the
golden model bit for bit (``check_step``: outputs, whole memory, counters)."""
import numpy as np
import pytest

from refree.golden.model import step
from refree.golden.planner import row_groups
from refree.verif.engine_run import EngineRunner, limits_of

from test_engine_step import ADDR_BITS, MAX_TABLES, PARAMS, check_step, make_batch

D = 64
# (the 32-lane engine lays the pooled output and the gradient out striped, as a chip of
# several ranks does: a row's beat j four beats after its beat j - 1)
WIDE = {lanes: EngineRunner(PARAMS, D, MAX_TABLES, ADDR_BITS, fold_lanes=lanes, staging_stripe=stripe)
        for lanes, stripe in ((32, 4), (64, 1))}
# 64 lanes, the default, in the suite; 32 (another build, about 3 minutes) with the slow
# tests (`make test-slow`), which keeps the suite within its budget.
LANES = pytest.mark.parametrize("lanes", [pytest.param(32, marks=pytest.mark.slow), 64])


@LANES
def test_the_runner_builds_a_wide_datapath(lanes):
    WIDE[lanes].build()
    assert WIDE[lanes].design.component.fold_lanes == lanes


@LANES
@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_weighted_mean_and_sum_tables_several_parts(mode, lanes):
    rng = np.random.default_rng(21)
    bags = [list(rng.zipf(1.3, rng.integers(0, 8)) % 30) for _ in range(2 * 10)]
    bags[2], bags[5], bags[13] = [3, 3, 3, 8, 3], [], [29] * 6
    w = rng.standard_normal(sum(map(len, bags))).astype(np.float32)
    w[rng.random(w.size) < 0.4] = 1
    batch = make_batch(bags, T=2, weights=w if mode != "baseline" else None)
    tables = [rng.standard_normal((30, D)).astype(np.float32) for _ in range(2)]
    tables[1][7, :4] = [-0.0, np.inf, 1e-45, np.nan]
    grad = rng.standard_normal((10, 2 * D)).astype(np.float32)
    poolings = ["sum", "sum"] if mode != "baseline" else ["mean", "sum"]
    counters = check_step(batch, tables, mode, grad=grad, poolings=poolings, runner=WIDE[lanes], seed=4,
                          latency=(1, 12), ready_p=0.6)
    assert counters["forward"]["parts"] > 2


@LANES
@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_mean_pooling_and_rowwise_adagrad(mode, lanes):
    rng = np.random.default_rng(22)
    bags = [list(rng.zipf(1.4, rng.integers(0, 7)) % 40) for _ in range(2 * 6)]
    bags[1] = [3, 3, 17, 18, 19]
    batch = make_batch(bags, T=2)
    tables = [rng.standard_normal((40, D)).astype(np.float32) for _ in range(2)]
    state = [np.abs(rng.standard_normal(40)).astype(np.float32) for _ in range(2)]
    grad = rng.standard_normal((6, 2 * D)).astype(np.float32)
    counters, new_state = check_step(batch, tables, mode, grad=grad, poolings=["mean", "sum"], runner=WIDE[lanes],
                                     optimizer="rowwise-adagrad", state=state, lr=0.1, seed=5,
                                     latency=(1, 10), ready_p=0.6)
    assert counters["backward"]["state_writes"] > 0 and counters["backward"]["muls"] > 0
    want = step(tables, batch, grad, 0.1, mode=mode, poolings=["mean", "sum"], limits=limits_of(PARAMS),
                optimizer="rowwise-adagrad", state=state)
    assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(new_state, want.state))


@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_backward_updates_a_row_every_four_cycles(mode):
    """Backward (SGD) at 64 lanes with memory answering the next cycle: 64 distinct rows,
    each in one bag, in several row groups (a group holds at most 32).  Each row's merge is an operation and a final, and its
    update D/16 = 4 beats through the row updater, a beat a cycle; the streams overlap, so
    the phase takes about 4 cycles a row plus a fill per group.  (When the updater asked the
    row store for a row's beats with their gradient beats, the store's short output queue
    let three beats in flight: about 20 cycles a row.)"""
    rng = np.random.default_rng(23)
    rows = rng.permutation(400)[:64]
    bags = [list(rows[8 * k:8 * k + 8]) for k in range(8)]
    batch = make_batch(bags)
    tables = [rng.standard_normal((400, D)).astype(np.float32)]
    grad = rng.standard_normal((8, D)).astype(np.float32)
    counters = check_step(batch, tables, mode, grad=grad, runner=WIDE[64], seed=6, latency=(1, 1), ready_p=1.0)
    bwd = counters["backward"]
    assert bwd["parts"] == row_groups(batch, 0, limits_of(PARAMS)) > 1 and bwd["distinct_rows"] == 64
    assert bwd["cycles_stream"] <= 4 * 64 + 100 * bwd["parts"], bwd["cycles_stream"]
