"""The whole buffer chip (hw/lrdimm/lrdimm_nmp.py), generated Verilog under cocotb and
Verilator: a host memory-controller driver programs every job through the NMP window, polls
STATUS and reads the counters back; training steps run with every DRAM-side and host-side
command checked against the timing rule table of the rank model (any violation fails the
run), pooled outputs, tables, Adagrad states and counters against the golden model bit for
bit, and the ranks' command counts against the engine's traffic counters.  Two ranks, so
beats come back in order from different ranks.  Some tests load the memory through the
host's ordinary writes and read results back through ordinary reads; the others preload
the DRAM models (a backdoor) to save simulated time."""
import json

import numpy as np
import pytest

from refree.golden.traces import make_trace
from refree.hw.engine.stale_set import StaleSetParams
from refree.hw.lrdimm.hot_row_store import HotStoreParams
from refree.hw.lrdimm.regmap import POISON_WORD
from refree.hw.lrdimm.registers import STATUS_REFUSED
from refree.verif.engine_run import EngineRunner
from refree.verif.staging import layout

from test_engine_step import DIM, DRAM, MAX_TABLES, PARAMS, check_step, make_batch

# The chip of these tests, of test_lrdimm_hot's and of test_lrdimm_stale's (one build): with
# a hot-row store (2,048 sets: the first job starts while the store still clears its tags
# after reset) and a stale set; a run that loads neither is the plain chip's (every
# access a miss of the store, no lookup stale).
HOT = HotStoreParams(beats=4096, ways=2)
STALE = StaleSetParams(entries=64, ways=4)
RUNNER = EngineRunner(PARAMS, DIM, MAX_TABLES, None, dram=DRAM, hot=HOT, stale=STALE)
ICARUS = EngineRunner(PARAMS, DIM, MAX_TABLES, None, dram=DRAM, sim="icarus")


@pytest.mark.parametrize("runner,mode", [(RUNNER, "baseline"), (RUNNER, "dedup"), (RUNNER, "refree"),
                                         (ICARUS, "refree")],
                         ids=["verilator-baseline", "verilator-dedup", "verilator-refree", "icarus-refree"])
def test_host_loads_trains_and_reads_back(runner, mode):
    """The host writes the batch and the table through ordinary DDR4 writes, runs a step
    through the window and reads the pooled output and the table back through ordinary
    reads (docs/design.md's worked example): what it reads is what the golden model says (check_step checks the outputs that
    the host read) and what DRAM holds (EngineRunner.step checks)."""
    rng = np.random.default_rng(4)
    batch = make_batch([[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    got = check_step(batch, tables, mode, runner=runner, host_io=True, outcome=True)
    assert set(got.run.readback) == set(layout(batch, tables, stripe=runner.staging_stripe).outputs())
    if mode == "refree":    # docs/design.md's worked example: 3 additions forward, 2 backward
        assert got.counters["forward"]["adds"] == 3 and got.counters["backward"]["adds"] == 2


def test_host_commands_outside_the_window_are_refused_during_a_job():
    """During the forward job the host reads one staged beat and writes the next: the read
    returns the poison pattern, the write changes nothing (check_step compares the whole
    memory), STATUS bit 16 is set and HOST_DROPPED counts the four commands (ACT + RD,
    ACT + WR); a PREA, a REF and a NOP that follow are ignored and not counted; CLEAR
    clears both."""
    rng = np.random.default_rng(5)
    batch = make_batch([[3, 1], [0, 3, 2], [1]])
    tables = [rng.standard_normal((6, DIM)).astype(np.float32)]
    lay = layout(batch, tables)
    run = check_step(batch, tables, "dedup", runner=RUNNER, intrude_addr=lay.offsets, outcome=True).run
    poison = int.from_bytes(POISON_WORD.to_bytes(4, "little") * 16, "little")
    assert run.intrude[0] == poison
    rm = RUNNER.design.component.regmap
    words = [[(b >> (32 * i)) & 0xFFFF_FFFF for b in job for i in range(16)] for job in run.windows]
    assert words[0][rm["STATUS"].word] & STATUS_REFUSED and words[0][rm["HOST_DROPPED"].word] == 4
    assert not run.intrude[1] & STATUS_REFUSED            # after CLEAR
    assert words[1][rm["HOST_DROPPED"].word] == 0 and not words[1][rm["STATUS"].word] & STATUS_REFUSED


def test_pass_through_reads_back_what_the_host_wrote():
    """No job: the host writes bursts all over both ranks (row hits, misses and conflicts in
    every bank, and the window's row in every other bank and rank, which is DRAM there) and
    reads them back, with the buffer's documented latency (the driver fails the run on read
    data at any other clock than RD + CL + READ_LATENCY_ADDED)."""
    rng = np.random.default_rng(6)
    batch = make_batch([[0]])
    tables = [rng.standard_normal((2, DIM)).astype(np.float32)]
    m, g = DRAM.mapping, DRAM.mapping.geometry
    RUNNER.build()
    w = RUNNER.design.component.regmap.window

    def under_window(a):
        rank, bg, ba, row, _ = m.locate(a)
        return (rank, bg, ba) == (w.rank, w.bg, w.ba) and w.row <= row < w.row + w.rows
    beside = [m.address(rank, bg, ba, w.row, 8 * int(rng.integers(g.bursts_per_row)))
              for rank in range(DRAM.ranks) for bg in range(g.bank_groups)
              for ba in range(g.banks_per_group)]
    extra = {a: int.from_bytes(rng.bytes(64), "little") for a in beside if not under_window(a)}
    assert len(extra) == DRAM.ranks * g.bank_groups * g.banks_per_group - 1
    while len(extra) < 300:
        a = int(rng.integers(64, 1 << m.addr_bits))
        if not under_window(a):
            extra[a] = int.from_bytes(rng.bytes(64), "little")
    run = RUNNER.run(batch, tables, [], "baseline", extra=extra, host_load=True, readback=sorted(extra))
    assert run.readback == extra
    assert {a: run.after[a] for a in extra} == extra



def test_a_layout_under_the_window_is_refused():
    """The host cannot reach the DRAM rows under the NMP window: data placed there is
    refused with a message naming the window, before anything runs."""
    RUNNER.build()
    w = RUNNER.design.component.regmap.window
    under = DRAM.mapping.address(w.rank, w.bg, w.ba, w.row, 8)
    with pytest.raises(ValueError, match=rf"beat address {under} lies under the NMP window "
                                         rf"\(rank {w.rank}, bank group {w.bg}, bank {w.ba}, "
                                         rf"rows {w.row} to {w.row}\)"):
        RUNNER.run(make_batch([[0]]), [np.zeros((2, DIM), np.float32)], [], "baseline",
                   extra={under: 1})

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


def test_refresh_on_time_over_a_long_step(tmp_path, monkeypatch):
    """A Zipf batch of many parts (bags of 1 to 20) runs for several tREFI: both ranks are
    refreshed, and the model fails the run if two REFs of a rank are more than 9 x tREFI
    apart (counted from the start and to the end of the run).  No REF is lost at the
    hand-back: each job has the take-over's and the hand-back's REF, and one for every
    tREFI the NMP owned the ranks (counted here over the job's own cycles, a little less).
    The run's timeline (``REFREE_TIMELINE``, what ``rtl-check --timeline`` writes) has each
    job's RDs and WRs on each rank within the job's span, as many as the rank counted."""
    timeline = tmp_path / "timeline.jsonl"
    monkeypatch.setenv("REFREE_TIMELINE", str(timeline))
    trace = make_trace("zipf", 64, 1, seed=5)
    tables = [np.random.default_rng(3).standard_normal((trace.num_rows[0], DIM)).astype(np.float32)]
    counters = check_step(trace.batch, tables, "dedup", runner=RUNNER)
    (line,) = timeline.read_text().splitlines()
    tl = json.loads(line)
    assert tl["mode"] == "dedup" and len(tl["jobs"]) == 2
    for (first, last), job in zip(tl["jobs"], ("forward", "backward")):
        assert last - first > counters[job]["cycles"]      # the engine's, within the host's span
        for r in range(DRAM.ranks):
            for kind, field in (("rd", "reads"), ("wr", "writes")):
                within = sum(first <= c < last for c in tl[kind][r])
                assert within == counters["dram"][job][r][field] > 0, (job, r, kind)
    cycles = counters["forward"]["cycles"] + counters["backward"]["cycles"]
    assert cycles > 2 * DRAM.timing.tREFI
    for job in ("forward", "backward"):
        refs = [counters["dram"][job][r]["refreshes"] for r in range(DRAM.ranks)]
        assert min(refs) >= counters[job]["cycles"] // DRAM.timing.tREFI + 2, (job, refs)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_random_steps_on_the_chip(seed):
    """Soak (`make test-slow`): random batches (one or two tables, empty bags, skewed rows
    repeated within and across bags, weights or mean pooling, several parts) in each mode,
    half of them loaded and read back through the host's DDR4 accesses."""
    rng = np.random.default_rng(1000 + seed)
    T, B = int(rng.integers(1, 3)), int(rng.integers(1, 48))
    rows = [int(rng.integers(2, 200)) for _ in range(T)]
    bags = [[min(rows[t] - 1, int(rng.zipf(1.3)) - 1) for _ in range(int(rng.integers(0, 17)))]
            for t in range(T) for _ in range(B)]
    weighted = rng.random() < 0.3
    weights = rng.standard_normal(sum(map(len, bags))).astype(np.float32) if weighted else None
    poolings = ["sum" if weighted else str(rng.choice(["sum", "mean"])) for _ in range(T)]
    tables = [rng.standard_normal((r, DIM)).astype(np.float32) for r in rows]
    check_step(make_batch(bags, T, weights), tables, ("baseline", "dedup", "refree")[seed % 3],
               runner=RUNNER, poolings=poolings, host_io=bool(seed % 2))


@pytest.mark.slow
def test_a_moved_window():
    """A chip built with its window elsewhere (rank 1, bank group 0, bank 1, rows 5 and 6;
    a build of its own): a step through it is bit-exact, and the default window's place
    is ordinary DRAM."""
    from refree.hw.lrdimm.regmap import WindowParams
    moved = EngineRunner(PARAMS, DIM, MAX_TABLES, None, dram=DRAM,
                         window=WindowParams(rank=1, bg=0, ba=1, row=5, rows=2))
    rng = np.random.default_rng(8)
    batch = make_batch([[5, 2, 0], [5, 2, 6], [1]])
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    check_step(batch, tables, "refree", runner=moved, host_io=True)
    m, g = DRAM.mapping, DRAM.mapping.geometry
    extra = {m.address(0, g.bank_groups - 1, g.banks_per_group - 1, g.rows - 1, 8 * k): k + 1
             for k in range(4)}
    run = moved.run(batch, tables, [], "baseline", extra=extra, host_load=True, readback=sorted(extra))
    assert run.readback == extra
