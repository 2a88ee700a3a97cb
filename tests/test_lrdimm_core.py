"""The engine on the DDR4 ranks of the buffer chip (hw/lrdimm/nmp_core.py), generated
Verilog under cocotb and Verilator: training steps with every DRAM command checked against
the timing rule table of the rank model (any violation fails the run), pooled outputs,
tables, Adagrad states and counters against the golden model bit for bit, and the ranks'
command counts against the engine's traffic counters.  Two ranks, so beats come back in
order from different ranks."""
import numpy as np
import pytest

from refree.golden.traces import make_trace
from refree.verif.engine_run import EngineRunner

from test_engine_step import DIM, DRAM, MAX_TABLES, PARAMS, check_step, make_batch

RUNNER = EngineRunner(PARAMS, DIM, MAX_TABLES, None, dram=DRAM)


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_worked_example_on_ddr4(mode):
    rng = np.random.default_rng(0)
    batch = make_batch([[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    counters = check_step(batch, tables, mode, runner=RUNNER)
    if mode == "refree":
        assert counters["forward"]["adds"] == 3 and counters["backward"]["adds"] == 2


@pytest.mark.parametrize("mode", ["baseline", "refree"])
def test_two_tables_mean_and_weights_several_parts_on_ddr4(mode):
    rng = np.random.default_rng(1)
    bags = [list(rng.zipf(1.3, rng.integers(0, 8)) % 30) for _ in range(2 * 12)]
    bags[3], bags[5] = [], [7, 7, 7]
    batch = make_batch(bags, T=2)
    tables = [rng.standard_normal((30, DIM)).astype(np.float32) for _ in range(2)]
    counters = check_step(batch, tables, mode, poolings=["mean", "sum"], runner=RUNNER)
    assert counters["forward"]["parts"] > 2


def test_adagrad_two_steps_with_state_in_dram():
    rng = np.random.default_rng(2)
    batch = make_batch([list(rng.integers(0, 20, rng.integers(1, 6))) for _ in range(8)])
    tables = [rng.standard_normal((20, DIM)).astype(np.float32)]
    _, state = check_step(batch, tables, "refree", optimizer="rowwise-adagrad", runner=RUNNER)
    check_step(batch, tables, "refree", optimizer="rowwise-adagrad", state=state, runner=RUNNER)


def test_refresh_on_time_over_a_long_step():
    """A Zipf batch of many parts (bags of 1 to 20) runs for several tREFI: both ranks are
    refreshed, and the model fails the run if two REFs of a rank are more than 9 x tREFI
    apart (counted from the start and to the end of the run)."""
    trace = make_trace("zipf", 64, 1, seed=5)
    tables = [np.random.default_rng(3).standard_normal((trace.num_rows[0], DIM)).astype(np.float32)]
    counters = check_step(trace.batch, tables, "dedup", runner=RUNNER)
    cycles = counters["forward"]["cycles"] + counters["backward"]["cycles"]
    assert cycles > 2 * DRAM.timing.tREFI
    refs = [sum(job[r]["refreshes"] for job in counters["dram"].values()) for r in range(DRAM.ranks)]
    assert min(refs) >= cycles // DRAM.timing.tREFI - 8, refs
    assert min(refs) >= 1
