"""FAE's hot rows in the buffer chip (hw/lrdimm/hot_row_store.py), generated Verilog under
cocotb and Verilator: the host loads a hot set through a job of the NMP window, runs a
training step in each mode and flushes.  Against the same chip with its store left empty (its
every output checked bit for bit against the golden model by ``check_step``): DRAM after
the flush identical beat for beat; each job's DRAM reads and writes fewer by exactly the
store's hits, which are the golden model's count (``golden.hot_rows.table_traffic``); the
flush writes back exactly the hot rows the step updated.  A refused load changes
nothing."""
import numpy as np
import pytest

from refree.golden.errors import ErrorCode
from refree.golden.hot_rows import HotSet, table_traffic
from refree.hw.engine.engine import JOB_BACKWARD, JOB_FORWARD
from refree.hw.lrdimm.hot_row_store import placement
from refree.verif.engine_run import JOB_HOT_FLUSH, JOB_HOT_LOAD, limits_of
from refree.verif.staging import layout

from test_engine_step import DIM, DRAM, LR, PARAMS, check_step, make_batch
from test_lrdimm_core import HOT, RUNNER

T, B, ROWS = 2, 24, 40


def skewed_batch(seed, longest=5):
    """T tables of B bags of 1 to ``longest`` rows of ROWS, Zipf-like (1.1)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, ROWS + 1) ** 1.1
    bags = [list(rng.choice(ROWS, size=rng.integers(1, longest + 1), p=p / p.sum())) for _ in range(T * B)]
    return make_batch(bags, T)


def hot_rows(batch, lay, want):
    """The most-looked-up rows of the batch, as many as fit the store (placement), as a
    HotSet and as the beat addresses of their rows."""
    counts = [np.bincount(batch.table_slice(t)[0], minlength=ROWS) for t in range(T)]
    order = sorted(((t, r) for t in range(T) for r in range(ROWS) if counts[t][r]), key=lambda k: -counts[k[0]][k[1]])
    chosen, beats = [], []
    for t, r in order[:want]:
        base, _, stride = lay.tables[t]
        row = [base + r * stride + k for k in range(lay.row_beats)]
        if isinstance(placement(beats + row, DRAM.mapping.addr_bits, HOT.beats, HOT.ways), list):
            chosen.append((t, r))
            beats += row
    rows = tuple(np.array(sorted(r for t_, r in chosen if t_ == t), np.int64) for t in range(T))
    return HotSet(rows, HOT.beats * 64, DIM), beats


def dram_total(per_rank, key):
    return sum(rank[key] for rank in per_rank)


@pytest.mark.parametrize("mode,optimizer", [("baseline", "sgd"), ("dedup", "sgd"), ("refree", "sgd"),
                                            ("refree", "rowwise-adagrad")])
def test_a_step_on_hot_rows_equals_the_step_without_them(mode, optimizer):
    """(Row-wise Adagrad: the hot rows' state beats stay in DRAM, the store's choice.)"""
    batch = skewed_batch(1)
    rng = np.random.default_rng(2)
    tables = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((B, T * DIM)).astype(np.float32)
    plain = check_step(batch, tables, mode, grad=grad, runner=RUNNER, outcome=True, optimizer=optimizer).run
    lay = layout(batch, tables, stripe=RUNNER.staging_stripe, with_state=optimizer != "sgd")
    hot, beats = hot_rows(batch, lay, want=20)
    assert len(beats) >= 15
    run = RUNNER.run(batch, tables, [JOB_HOT_LOAD, JOB_FORWARD, JOB_BACKWARD, JOB_HOT_FLUSH], mode,
                         grad=grad, lr=LR, hot_beats=beats, optimizer=optimizer)
    assert run.errors == [0, 0, 0, 0]
    list_beats = {a for a in run.before if a >= lay.end}
    assert {a: v for a, v in run.after.items() if a not in list_beats} == plain.after
    hits = [(c["hot_read_hits"], c["hot_write_hits"]) for c in run.counters]    # (since reset)
    step_hits = [(hits[j][0] - hits[j - 1][0], hits[j][1] - hits[j - 1][1]) for j in (1, 2)]
    for j, (reads, writes) in zip((1, 2), step_hits):      # forward, backward: DRAM spared the hits
        assert dram_total(run.dram[j], "reads") + reads == dram_total(plain.dram[j - 1], "reads")
        assert dram_total(run.dram[j], "writes") + writes == dram_total(plain.dram[j - 1], "writes")
    want = table_traffic([batch], hot, mode, limits_of(PARAMS))
    assert sum(r + w for r, w in step_hits) == want["hits"] * lay.row_beats > 0
    assert run.counters[0]["hot_loaded"] == len(beats) == want["load"] * lay.row_beats
    assert dram_total(run.dram[0], "reads") == len(beats) + -(-len(beats) // 16)   # the rows and their list
    flushed = run.counters[3]["hot_written_back"]
    assert flushed == dram_total(run.dram[3], "writes") == want["flush"] * lay.row_beats


def test_a_step_of_the_runner_between_a_load_and_a_flush():
    """``EngineRunner.step(hot_rows=...)``, which ``refree rtl-check --hot`` runs: the rows
    that fit loaded before the step, flushed after it; the step the golden model's
    (``check_step``: outputs, counters, nothing else in memory changed), the store's loads,
    hits and write-backs the golden counts (``gen.rtl._check_hot_store``)."""
    from refree.gen.rtl import _check_hot_store
    batch = skewed_batch(5)
    rng = np.random.default_rng(6)
    tables = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(T)]
    rows = tuple(np.unique(batch.table_slice(t)[0]) for t in range(T))
    got = check_step(batch, tables, "refree", runner=RUNNER, outcome=True, hot_rows=rows)
    assert [list(k) for k in got.counters["hot_rows"]] == [list(r) for r in rows]     # (all fit)
    fig = _check_hot_store(got.counters, batch, "refree", limits_of(PARAMS), got.run.lay.row_beats, DIM,
                           lambda line: None)
    # every row of the batch hot: every table beat of the step served on chip
    fwd, bwd = got.counters["forward"], got.counters["backward"]
    assert fig["hits"] == fwd["table_reads"] + bwd["table_reads"] + bwd["table_writes"] > 0
    assert fig["written_back"] == bwd["table_writes"]


@pytest.mark.parametrize("case", ["duplicate", "too_many", "not_empty"])
def test_a_refused_load_changes_nothing(case):
    """A duplicate beat (the store emptied again), more beats than the store holds (refused
    before any read), a load into a store that holds beats (the first load stays): the step
    after it is the step without the store."""
    batch = skewed_batch(3)
    rng = np.random.default_rng(4)
    tables = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((B, T * DIM)).astype(np.float32)
    plain = check_step(batch, tables, "refree", grad=grad, runner=RUNNER, outcome=True).run
    lay = layout(batch, tables, stripe=RUNNER.staging_stripe)
    _, beats = hot_rows(batch, lay, want=8)
    base = lay.tables[0][0]
    listed = {"duplicate": beats + beats[:1], "too_many": list(range(base, base + HOT.beats + 1)),
              "not_empty": beats}[case]
    loads = [JOB_HOT_LOAD] * (2 if case == "not_empty" else 1)
    run = RUNNER.run(batch, tables, loads + [JOB_FORWARD, JOB_BACKWARD, JOB_HOT_FLUSH], "refree",
                         grad=grad, lr=LR, hot_beats=listed, go_on=True)
    code = {"duplicate": ErrorCode.HOT_DUPLICATE, "too_many": ErrorCode.HOT_TOO_MANY,
            "not_empty": ErrorCode.HOT_NOT_EMPTY}[case]
    assert run.errors == [0] * (len(loads) - 1) + [code, 0, 0, 0]
    list_beats = {a for a in run.before if a >= lay.end}
    assert {a: v for a, v in run.after.items() if a not in list_beats} == plain.after
    refused = len(loads) - 1
    if case == "too_many":
        assert dram_total(run.dram[refused], "reads") == 0
    if case == "not_empty":     # the first load's rows still served
        assert dram_total(run.dram[refused], "reads") == 0 and run.counters[-1]["hot_read_hits"] > 0
    else:                       # nothing held: every access to DRAM
        assert run.counters[-1]["hot_read_hits"] == run.counters[-1]["hot_write_hits"] == 0
