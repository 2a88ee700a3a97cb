"""The engine on generated Verilog (cocotb, Verilator; a smaller set on Icarus): training
steps (a forward job, then a backward job with SGD) on batches in memory behind a port
with random latency and backpressure.  Pooled outputs, the whole tables afterwards and the
counters against the schedule-exact golden model, bit for bit."""
from dataclasses import replace

import numpy as np
import pytest

from refree.golden.batch import Batch
from refree.golden.errors import BatchError, ErrorCode
from refree.golden.model import step
from refree.golden.roofline import input_beats
from refree.hw.engine.engine import JOB_BACKWARD, JOB_FORWARD
from refree.hw.ddr4.params import DramParams
from refree.hw.engine.params import EngineParams
from refree.verif.engine_run import EngineRunner, limits_of

# Small buffers, so that a test batch needs several parts (closed by each of the limits).
PARAMS = EngineParams(index_width=16, max_bags=8, max_lookups=80, max_distinct_rows=32,
                      max_bag_len=32, radix_bits=4)
DIM, MAX_TABLES, ADDR_BITS = 16, 4, 24
# The DDR4 ranks of the engine-on-DRAM tests (tests/test_lrdimm_core.py) and of the command
# line's `--engine rtl` (default memory ddr4): small rows, so that addresses are short.
DRAM = DramParams(ranks=2, rows=1 << 10)
RUNNERS = {sim: EngineRunner(PARAMS, DIM, MAX_TABLES, ADDR_BITS, sim) for sim in ("verilator", "icarus")}
LR = 0.0625


def make_batch(bags, T=1, weights=None):
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    return Batch(idx, offs, len(bags) // T, per_sample_weights=weights)


def check_step(batch, tables, mode, sim="verilator", grad=None, lr=LR, poolings=None, optimizer="sgd",
               state=None, eps=1e-8, runner=None, outcome=False, **kw):
    """One step on the RTL (``runner``, default that of ``sim``) against the golden model;
    returns the RTL's counters (and, with Adagrad, the new state), or with ``outcome`` the
    whole StepOutcome.  ``stale`` in ``kw`` (Slipstream, an engine with a stale set): the
    golden step skips the rows that the engine's set held, the engine's count of lookups
    skipped is theirs and their rows are untouched."""
    B, T = batch.batch_size, batch.num_tables
    if grad is None:
        grad = np.random.default_rng(99).standard_normal((B, T * DIM)).astype(np.float32)
    got = (runner or RUNNERS[sim]).step(tables, batch, grad, lr, mode, poolings=poolings, optimizer=optimizer,
                            state=state, eps=eps, **kw)
    assert got.error == 0
    stale = got.counters.get("stale_rows")
    want = step(tables, batch, grad, lr, mode=mode, poolings=poolings, limits=limits_of(PARAMS),
                optimizer=optimizer, state=state, eps=eps, groups=None if mode == "baseline" else kw.get("groups"),
                stale=stale)
    assert np.array_equal(got.pooled.view(np.uint32), want.pooled.view(np.uint32))
    for t, (g, w) in enumerate(zip(got.tables, want.tables)):
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32)), f"table {t} differs"
    for t, (g, w) in enumerate(zip(got.state or [], want.state or [])):
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32)), f"state {t} differs"
    assert (got.state is None) == (want.state is None)
    # nothing else in memory changed: only the pooled output, the table rows and the
    # Adagrad states may
    lay, run = got.run.lay, got.run
    written = set(range(lay.pooled, lay.pooled + lay.pooled_beats))
    for base, rows, stride in lay.tables:
        written |= set(range(base, base + rows * stride))
    for base, (_, rows, _) in zip(lay.states, lay.tables):
        written |= set(range(base, base + -(-rows // 16)))
    assert {a: v for a, v in run.after.items() if a not in written} == \
        {a: v for a, v in run.before.items() if a not in written}
    fwd, bwd, c, beats = got.counters["forward"], got.counters["backward"], want.counts, lay.row_beats
    assert fwd["table_reads"] == c["forward"]["reads"] * beats
    assert fwd["adds"] == c["forward"]["adds"] and fwd["muls"] == c["forward"]["muls"]
    assert fwd["pooled_writes"] == B * T * beats and fwd["table_writes"] == 0 and fwd["grad_reads"] == 0
    assert bwd["grad_reads"] == c["backward"]["reads"] * beats
    assert bwd["adds"] == c["backward"]["adds"] and bwd["muls"] == c["backward"]["muls"]
    assert bwd["table_reads"] == bwd["table_writes"] == c["update"]["rmw"] * beats
    assert bwd["pooled_writes"] == 0 and fwd["state_reads"] == fwd["state_writes"] == 0
    # Adagrad: one state beat read-modify-write per updated row
    assert bwd["state_reads"] == bwd["state_writes"] == (c["update"]["rmw"] if want.state else 0)
    assert fwd["parts"] == c["parts"] and fwd["distinct_rows"] == c["distinct_rows"]
    # backward by rows: a pass per row group, each distinct row in one (baseline: the parts)
    assert (bwd["parts"], bwd["distinct_rows"]) == ((c["parts"], c["distinct_rows"]) if want.row_groups is None
                                                    else (sum(want.row_groups), c["update"]["rmw"]))
    for job in (fwd, bwd):
        phases = sum(job[k] for k in ("cycles_check", "cycles_analysis", "cycles_stream", "cycles_drain"))
        assert phases == job["cycles"]
    if stale is not None:
        skipped = sum(int(s[batch.table_slice(t)[0]].sum()) for t, s in enumerate(stale))
        rows = sum(int(s[np.unique(batch.table_slice(t)[0])].sum()) for t, s in enumerate(stale))
        assert (bwd["stale_skipped"], bwd["stale_rows_skipped"]) == (skipped, rows)
        assert fwd["stale_skipped"] == fwd["stale_rows_skipped"] == 0
        for t, s in enumerate(stale):
            assert np.array_equal(got.tables[t][s].view(np.uint32), tables[t][s].view(np.uint32))
    if run.dram:    # DDR4: the ranks carried exactly the engine's traffic, a burst a beat, but
        # for what a hot-row store served (its counters since reset: the job's less the last's)
        last = got.counters.get("hot load")
        for name, job in (("forward", fwd), ("backward", bwd)):
            dram = got.counters["dram"][name]
            hits = [job[k] - last[k] for k in ("hot_read_hits", "hot_write_hits")] if last else [0, 0]
            last = job if last else None
            beats_read = sum(job[k] for k in ("input_reads", "table_reads", "grad_reads", "state_reads"))
            beats_written = sum(job[k] for k in ("table_writes", "pooled_writes", "state_writes"))
            assert sum(r["reads"] for r in dram) + hits[0] == beats_read
            assert sum(r["writes"] for r in dram) + hits[1] == beats_written
    if outcome:
        return got
    return (got.counters, got.state) if optimizer != "sgd" else got.counters


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_worked_example(mode):
    rng = np.random.default_rng(0)
    batch = make_batch([[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    counters = check_step(batch, tables, mode)
    if mode == "refree":    # docs/design.md's worked example: 3 additions forward, 2 backward
        assert counters["forward"]["adds"] == 3 and counters["backward"]["adds"] == 2


@pytest.mark.parametrize("poolings", [("sum", "sum"), ("mean", "sum"), ("sum", "mean")], ids="-".join)
@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_two_tables_several_parts_empty_bags_repeated_rows(mode, poolings):
    rng = np.random.default_rng(1)
    bags = [list(rng.zipf(1.3, rng.integers(0, 8)) % 30) for _ in range(2 * 12)]
    bags[3], bags[5], bags[20], bags[21] = [], [7, 7, 7], [29] * 8, [4, 4, 9, 4, 9]
    batch = make_batch(bags, T=2)
    tables = [rng.standard_normal((30, DIM)).astype(np.float32) for _ in range(2)]
    tables[1][7] = [-0.0, np.inf, 1e-45, -1e-45, 3.4e38, 3.4e38, 0, 1, 2, 3, 4, 5, 6, 7, 8, np.nan]
    grad = rng.standard_normal((12, 2 * DIM)).astype(np.float32)
    grad[1, :4] = [-0.0, 0.0, np.inf, 1e-40]
    counters = check_step(batch, tables, mode, grad=grad, seed=2, latency=(1, 20), ready_p=0.5,
                          poolings=list(poolings))
    assert counters["forward"]["parts"] > 2


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_weighted_bags(mode):
    # Rows repeated in a bag (refree folds their weights into one coefficient, dedup applies
    # each occurrence's weight), weights 1 (no multiply), 0, -0, negative, subnormal, inf
    # and a NaN with a payload; several parts on two tables.
    rng = np.random.default_rng(7)
    bags = [list(rng.zipf(1.3, rng.integers(0, 8)) % 30) for _ in range(2 * 12)]
    bags[2], bags[5], bags[17] = [3, 3, 3, 8, 3], [7, 9, 7, 7], [4, 4]
    n = sum(map(len, bags))
    w = rng.standard_normal(n).astype(np.float32)
    special = np.array([1, 1, 0, -0.0, -2.5, 1e-42, np.inf, 1, 0.5, 0.5, 0.5], np.float32)
    pick = rng.random(n) < 0.5
    w[pick] = rng.choice(special, pick.sum())
    w[11] = np.uint32(0x7FC0BEEF).view(np.float32)
    batch = make_batch(bags, T=2, weights=w)
    tables = [rng.standard_normal((30, DIM)).astype(np.float32) for _ in range(2)]
    counters = check_step(batch, tables, mode, seed=3, latency=(1, 12), ready_p=0.6)
    assert counters["forward"]["parts"] > 2 and counters["forward"]["muls"] > 0


# (offsets, indices) widths per mode: each array is read in its own
INT32_CASES = {"baseline": (np.int32, np.int32), "dedup": (np.int64, np.int32), "refree": (np.int32, np.int64)}


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_int32_offsets_and_indices(mode):
    """int32 arrays (FBGEMM's and PyTorch's other width) read as they are: bit for bit on two
    weighted tables of several parts, and a batch of one part reads its int32 input in its
    width, fewer beats than its int64 twin."""
    offs_t, idx_t = INT32_CASES[mode]
    rng = np.random.default_rng(11)
    bags = [list(rng.integers(0, 30, rng.integers(0, 8))) for _ in range(2 * 12)]
    bags[4] = [29] * 8
    n = sum(map(len, bags))
    batch = make_batch(bags, T=2, weights=rng.standard_normal(n).astype(np.float32))
    batch = Batch(batch.indices.astype(idx_t), batch.offsets.astype(offs_t), 12, batch.per_sample_weights)
    assert (batch.offsets_int32, batch.indices_int32) == (offs_t == np.int32, idx_t == np.int32)
    tables = [rng.standard_normal((30, DIM)).astype(np.float32) for _ in range(2)]
    assert check_step(batch, tables, mode, seed=4, latency=(1, 12))["forward"]["parts"] > 2
    one = make_batch([list(rng.integers(0, 30, 7)) for _ in range(8)])    # 56 lookups, one part
    one = Batch(one.indices.astype(idx_t), one.offsets.astype(offs_t), 8)
    counters = check_step(one, tables[:1], mode, seed=5)
    assert counters["forward"]["parts"] == 1
    # (the batch check and the part each read the offsets; the part takes the check's indices)
    assert counters["forward"]["input_reads"] == input_beats(one) + one.array_beats("offsets")
    assert input_beats(one) < input_beats(one.with_index_dtype(np.int64))


def test_a_negative_int32_index_is_refused():
    """A negative int32 index is out of range; nothing is written.  (That it is sign-extended,
    so out of range even in a table of 2**32 rows, the batch checker's test shows.)"""
    rng = np.random.default_rng(3)
    batch = Batch.__new__(Batch)        # bypass the host's checks: the engine must catch it
    for name, value in (("indices", np.array([1, 2, -1, 0, 1], np.int64)), ("offsets", np.array([0, 2, 3, 5])),
                        ("batch_size", 3), ("per_sample_weights", None), ("indices_int32", True),
                        ("offsets_int32", True)):
        object.__setattr__(batch, name, value)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    r = RUNNERS["verilator"].run(batch, tables, [JOB_FORWARD], "refree", tag="negative-int32")
    assert r.errors == [ErrorCode.INDEX_OUT_OF_RANGE] and r.after == r.before


@pytest.mark.parametrize("poolings", [("sum", "mean"), ("mean", "sum")], ids="-".join)
@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_rowwise_adagrad_two_steps_state_in_memory(mode, poolings):
    # One part per table (Adagrad's rule); rows repeated across and within bags; rows that
    # share a state beat (16 states to a beat) updated one after another; the second step
    # starts from the first one's state, as training does.
    rng = np.random.default_rng(8)
    bags = [list(rng.zipf(1.4, rng.integers(0, 7)) % 40) for _ in range(2 * 8)]
    bags[1], bags[9] = [3, 3, 17, 18, 19], []
    batch = make_batch(bags, T=2)
    tables = [rng.standard_normal((40, DIM)).astype(np.float32) for _ in range(2)]
    tables[0][3, :3] = [np.inf, -0.0, 1e-40]
    state = [np.abs(rng.standard_normal(40)).astype(np.float32) for _ in range(2)]
    state[1][:20] = 0
    for k in range(2):
        grad = rng.standard_normal((8, 2 * DIM)).astype(np.float32)
        counters, new_state = check_step(batch, tables, mode, grad=grad, poolings=list(poolings),
                                         optimizer="rowwise-adagrad", state=state, lr=0.1, seed=k,
                                         latency=(1, 10), ready_p=0.6)
        # (the RTL's tables equal these: check_step compared them)
        tables = step(tables, batch, grad, 0.1, mode=mode, poolings=list(poolings), limits=limits_of(PARAMS),
                      optimizer="rowwise-adagrad", state=state).tables
        state = new_state
    assert counters["backward"]["state_writes"] > 0


BEYOND_ONE_PART = {                                                         # max_bags 8, 32 distinct rows
    "too many bags": [[1]] * 12,
    "too many distinct rows": [list(range(6 * b, 6 * b + 6)) for b in range(8)],     # 48 > 32
    # two chunks, the distinct rows beyond 32 in the second: the group overflows there
    "in the second chunk": [[1, 2]] * 8 + [list(range(6 * b, 6 * b + 6)) for b in range(6)],
    "second table": [[1, 2]] * 8 + [list(range(6 * b, 6 * b + 6)) for b in range(8)],
    "first table": [list(range(6 * b, 6 * b + 6)) for b in range(8)] + [[1, 2]] * 8}


@pytest.mark.parametrize("mode", ["dedup", "refree"])
@pytest.mark.parametrize("what", BEYOND_ONE_PART)
def test_adagrad_on_batches_beyond_one_part(what, mode):
    """Backward by rows: row-wise Adagrad on batches of several parts (bags beyond max_bags,
    distinct rows beyond a part's, in either table), each row updated once."""
    rng = np.random.default_rng(6)
    T = 2 if what.endswith("table") else 1
    batch = make_batch(BEYOND_ONE_PART[what], T=T)
    tables = [rng.standard_normal((48, DIM)).astype(np.float32) for _ in range(T)]
    state = [np.abs(rng.standard_normal(48)).astype(np.float32) for _ in range(T)]
    counters, _ = check_step(batch, tables, mode, optimizer="rowwise-adagrad", state=state, lr=0.1)
    assert counters["forward"]["parts"] > T


@pytest.mark.parametrize("what", [w for w in BEYOND_ONE_PART if w != "too many bags"])
def test_too_few_row_groups_are_refused_whole(what):
    """A host that asks for too few row groups (one where two are needed) gets
    ROW_GROUP_TOO_LARGE from the backward job before any write, as from the golden model:
    also when only the second table's group is too large (the first table's rows must not
    be updated: its dry pass), and when only the first's is (its pass checks itself before
    it writes)."""
    rng = np.random.default_rng(6)
    T = 2 if what.endswith("table") else 1
    batch = make_batch(BEYOND_ONE_PART[what], T=T)
    tables = [rng.standard_normal((48, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((batch.batch_size, T * DIM)).astype(np.float32)
    for optimizer in ("sgd", "rowwise-adagrad"):
        r = RUNNERS["verilator"].run(batch, tables, [JOB_BACKWARD], "refree", grad=grad, lr=LR, optimizer=optimizer,
                                     groups=[1] * T, tag="groups-" + what.replace(" ", "-"))
        assert r.errors == [ErrorCode.ROW_GROUP_TOO_LARGE]
        assert r.after == r.before
        with pytest.raises(BatchError) as e:
            step(tables, batch, grad, LR, mode="refree", limits=limits_of(PARAMS), optimizer=optimizer,
                 groups=[1] * T)
        assert e.value.code == ErrorCode.ROW_GROUP_TOO_LARGE


def test_a_job_after_a_merge_dropped_runs_clean():
    """A backward job refused after its merge began (the self-checking group too large:
    MERGE_DRAIN), then a forward job on the same engine: the first writes nothing, and the
    second's pooled outputs are the golden model's (nothing of the dropped merge is left in
    a queue, the scheduler, the datapath or the row store)."""
    from refree.golden.model import forward, plan_batch
    from refree.verif.staging import unpack_rows, unpack_staging_rows
    rng = np.random.default_rng(16)
    batch = make_batch(BEYOND_ONE_PART["too many distinct rows"])
    tables = [rng.standard_normal((48, DIM)).astype(np.float32)]
    grad = rng.standard_normal((batch.batch_size, DIM)).astype(np.float32)
    r = RUNNERS["verilator"].run(batch, tables, [JOB_BACKWARD, JOB_FORWARD], "refree", grad=grad, lr=LR,
                                 groups=[1], go_on=True, tag="after-merge-dropped")
    assert r.errors == [ErrorCode.ROW_GROUP_TOO_LARGE, 0]
    pooled = unpack_staging_rows(r.after, r.lay, r.lay.pooled, batch.batch_size, DIM)
    want = forward(tables, batch, ["sum"], "refree", plan_batch(batch, ["sum"], limits_of(PARAMS)))
    assert np.array_equal(pooled.view(np.uint32), want.view(np.uint32))
    for E, (base, rows, stride) in zip(tables, r.lay.tables):         # (the refused job wrote nothing)
        assert np.array_equal(unpack_rows(r.after, base, rows, stride, DIM).view(np.uint32), E.view(np.uint32))


def test_a_weighted_job_after_a_refused_one_reads_its_own_weights():
    """``baseline``, weighted: a forward job refused for its poolings (weights with mean: the
    check fails before any index, so no lookup, and no weight, is taken), then the same batch
    summed, on the same engine: the weights the first job's reader had asked for are drained
    with it, and the second job's pooled outputs are the golden model's.  (Without the drain
    the second job's second part took the first part's weights left over: measured.)"""
    from refree.golden.model import forward, plan_batch
    from refree.verif.staging import unpack_staging_rows
    rng = np.random.default_rng(21)
    bags = [list(rng.integers(0, 8, n)) for n in (3, 5, 0, 4, 6, 2, 7, 1, 5, 3, 6, 2)]    # (two parts)
    weights = rng.standard_normal(sum(map(len, bags))).astype(np.float32)
    batch = make_batch(bags, weights=weights)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    r = RUNNERS["verilator"].run(batch, tables, [JOB_FORWARD, JOB_FORWARD], "baseline", poolings=[["mean"], ["sum"]],
                                 go_on=True, tag="weighted-after-refused")
    assert r.errors == [ErrorCode.WEIGHTS_WITH_MEAN, 0]
    assert r.counters[0]["parts"] == 0          # (the refused job ended in its first part)
    pooled = unpack_staging_rows(r.after, r.lay, r.lay.pooled, batch.batch_size, DIM)
    want = forward(tables, batch, ["sum"], "baseline", plan_batch(batch, ["sum"], limits_of(PARAMS)))
    assert np.array_equal(pooled.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("large", [0, 1, None], ids=["first table large", "second table large", "one table"])
def test_a_bad_index_comes_before_a_row_group_too_large(large):
    """A batch that is both malformed (an index outside the other table) and given too few
    row groups (one table needs two) gets the input's error, as the golden model checks the
    input first, and nothing is written.  With one table (no dry pass) the group's pass
    fetches its rows while it is analysed (rows outside the table never)."""
    rng = np.random.default_rng(7)
    large_bags = [list(range(6 * b, 6 * b + 6)) for b in range(8)]        # 48 rows > 32
    small_bags = [[1, 2]] * 7 + [[3, 48]]                                  # row 48 of 48
    bags = {0: large_bags + small_bags, 1: small_bags + large_bags, None: small_bags}[large]
    T = 1 if large is None else 2
    batch = make_batch(bags, T=T)
    tables = [rng.standard_normal((48, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((batch.batch_size, T * DIM)).astype(np.float32)
    with pytest.raises(BatchError) as e:
        step(tables, batch, grad, LR, mode="dedup", limits=limits_of(PARAMS), optimizer="rowwise-adagrad",
             groups=[1] * T)
    assert e.value.code == ErrorCode.INDEX_OUT_OF_RANGE
    r = RUNNERS["verilator"].run(batch, tables, [JOB_BACKWARD], "dedup", grad=grad, lr=LR,
                                 optimizer="rowwise-adagrad", groups=[1] * T, tag=f"groups-bad-index-{large}")
    assert r.errors == [ErrorCode.INDEX_OUT_OF_RANGE]
    assert r.after == r.before
    if large is None:                   # rows 1, 2 and 3 fetched at most, never row 48
        assert r.counters[0]["table_reads"] <= 3 * DIM // 16


@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_row_groups_beyond_the_fewest(mode, dtype):
    """The host may ask for more row groups than the fewest that fit: the values are the
    same, each group's pass reads the gradient rows of the bags it touches.  (A pass after
    the job's first passes over runs of other groups' lookups a beat at a time: the bags
    here, of up to 11 lookups, span index beats, int64 and int32, and some are wholly
    outside a group.)"""
    rng = np.random.default_rng(9)
    bags = [list(rng.integers(0, 40, rng.integers(0, 12))) for _ in range(2 * 12)]
    batch = make_batch(bags, T=2).with_index_dtype(dtype)
    tables = [rng.standard_normal((40, DIM)).astype(np.float32) for _ in range(2)]
    got = check_step(batch, tables, mode, groups=[4, 8], outcome=True)
    assert got.counters["backward"]["parts"] == 4 + 8


def test_adagrad_in_baseline_is_refused():
    rng = np.random.default_rng(6)
    batch = make_batch([[1, 2], [2]])
    tables = [rng.standard_normal((4, DIM)).astype(np.float32)]
    grad = rng.standard_normal((2, DIM)).astype(np.float32)
    r = RUNNERS["verilator"].run(batch, tables, [JOB_FORWARD, JOB_BACKWARD], "baseline", grad=grad, lr=LR,
                                 optimizer="rowwise-adagrad", tag="adagrad-baseline")
    assert r.errors == [ErrorCode.ADAGRAD_IN_BASELINE]      # the run stops at the first job
    assert r.after == r.before


def test_all_bags_empty_in_a_part():
    rng = np.random.default_rng(5)
    batch = make_batch([[]] * 9 + [[1, 2]])
    tables = [rng.standard_normal((4, DIM)).astype(np.float32)]
    for mode in ("baseline", "refree"):
        check_step(batch, tables, mode)


@pytest.mark.parametrize("trace,mode,pooling", [
    ("movielens", "refree", "sum"), ("movielens", "dedup", "mean"), ("movielens", "refree", "mean"),
    ("zipf", "refree", "sum"), ("uniform", "baseline", "mean"), ("meta", "refree", "sum")])
def test_traces(trace, mode, pooling):
    from refree.golden.traces import make_trace
    kw = {"movielens": dict(batch_index=40), "zipf": dict(num_rows=200, bag_len=6, seed=3),
          "uniform": dict(num_rows=200, bag_len=6, seed=3),
          "meta": dict(num_rows=500, seed=5)}[trace]      # seed 5: no bag over max_bag_len
    tr = make_trace(trace, 16, 1, **kw)
    rng = np.random.default_rng(3)
    tables = [rng.standard_normal((tr.num_rows[0], DIM)).astype(np.float32)]
    counters = check_step(tr.batch, tables, mode, seed=4, poolings=[pooling])
    if mode == "refree" and trace == "movielens":       # sharing happens
        assert counters["forward"]["adds"] < sum(max(n - 1, 0) for n in np.diff(tr.batch.offsets))


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_cycles_with_an_ideal_memory(mode):
    """docs/design.md section 5, as far as the engine meets it today, with memory answering the
    next cycle and never refusing.  Met: the analysis takes every lookup in one cycle (plus
    3 cycles per bag to fetch its length, 1 per offset read and a fill per part).  Not met:
    streaming is bound by the fold datapath's read-after-write wait (an operation that
    reads the accumulator the operation before it wrote waits for the FMA pipeline: up to
    ``latency`` cycles an operation at D = 16), after the analyzer's sort; the phases do
    not overlap.  The bounds below are that model, so the test fails if the engine gets
    slower than it; docs/verification.md says what it measures."""
    from refree.golden.traces import make_trace
    from refree.hw.engine.analyzer import Analyzer
    from refree.hw.engine.datapath import FoldDatapath
    tr = make_trace("movielens", 16, 1, batch_index=40)
    batch = tr.batch
    tables = [np.random.default_rng(3).standard_normal((tr.num_rows[0], DIM)).astype(np.float32)]
    counters = check_step(batch, tables, mode, seed=4, latency=(1, 1), ready_p=1.0)
    B, n = batch.batch_size, len(batch.indices)
    fwd = counters["forward"]
    parts, rows = fwd["parts"], fwd["distinct_rows"]
    assert fwd["cycles_analysis"] <= n + 4 * B + 60 * parts
    # The analyzer's sort runs in the stream phase (before the first member comes out): a
    # walk over the rows per radix pass after the first (built during the insertion).
    sort = Analyzer(PARAMS).walks * (rows + 4 * parts) + 8 * parts
    latency = FoldDatapath(DIM, 8, 4, 8).latency
    ops = fwd["adds"] + parts * B                   # at most one operation per addition or bag start
    print(f"{mode}: lookups {n}, rows {rows}, parts {parts}, operations <= {ops}; analysis "
          f"{fwd['cycles_analysis']}, stream {fwd['cycles_stream']} (sort <= {sort}, "
          f"operations x latency {ops * latency})")
    assert fwd["cycles_stream"] <= sort + ops * latency + 60 * parts


BAD = [
    ("decreasing offsets", dict(offsets=[0, 3, 2, 5]), ErrorCode.MALFORMED_OFFSETS),
    ("offsets not from 0", dict(offsets=[1, 2, 3, 5]), ErrorCode.MALFORMED_OFFSETS),
    ("last offset short", dict(offsets=[0, 2, 3, 4]), ErrorCode.MALFORMED_OFFSETS),
    ("index past the table", dict(indices=[1, 2, 99, 0, 1]), ErrorCode.INDEX_OUT_OF_RANGE),
    ("negative index", dict(indices=[1, 2, -1, 0, 1]), ErrorCode.INDEX_OUT_OF_RANGE),
    ("bag too long", dict(offsets=[0, 0, 0, 33], indices=[1] * 33), ErrorCode.BAG_TOO_LONG),
    ("weights with mean", dict(weights=True, poolings=["mean"]), ErrorCode.WEIGHTS_WITH_MEAN),
]


def test_bad_batches_of_several_chunks_write_nothing():
    """Backward by rows in chunks (B = 12 > max_bags = 8): a bad index in the second chunk, or
    offsets that go wrong there, are found before the first write (a later chunk waits for
    the batch check's verdict)."""
    rng = np.random.default_rng(2)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    grad = rng.standard_normal((12, DIM)).astype(np.float32)
    for what, offsets, indices, code in (
            ("index", list(range(13)), [1, 2, 3, 0] * 2 + [1, 2, 9, 0], ErrorCode.INDEX_OUT_OF_RANGE),
            ("offsets", list(range(10)) + [8, 11, 12], [1] * 12, ErrorCode.MALFORMED_OFFSETS)):
        batch = Batch.__new__(Batch)    # bypass the host's checks: the engine must catch it
        object.__setattr__(batch, "indices", np.array(indices, np.int64))
        object.__setattr__(batch, "offsets", np.array(offsets, np.int64))
        object.__setattr__(batch, "batch_size", 12)
        object.__setattr__(batch, "per_sample_weights", None)
        for mode in ("dedup", "refree"):
            r = RUNNERS["verilator"].run(batch, tables, [JOB_BACKWARD], mode, grad=grad, lr=LR,
                                         tag=f"chunks-bad-{what}")
            assert r.errors == [code] and r.after == r.before, (what, mode)


@pytest.mark.parametrize("job", [JOB_FORWARD, JOB_BACKWARD], ids=["forward", "backward"])
@pytest.mark.parametrize("what,bad,code", BAD, ids=[b[0] for b in BAD])
def test_bad_batches_set_the_error_code_and_write_nothing(what, bad, code, job):
    rng = np.random.default_rng(2)
    batch = Batch.__new__(Batch)        # bypass the host's checks: the engine must catch it
    object.__setattr__(batch, "indices", np.array(bad.get("indices", [1, 2, 3, 0, 1]), np.int64))
    object.__setattr__(batch, "offsets", np.array(bad.get("offsets", [0, 2, 3, 5]), np.int64))
    object.__setattr__(batch, "batch_size", 3)
    object.__setattr__(batch, "per_sample_weights",
                       np.full(len(batch.indices), 0.5, np.float32) if bad.get("weights") else None)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    grad = rng.standard_normal((3, DIM)).astype(np.float32)
    # (baseline streams the part beside the check: its writes wait for the verdict)
    for mode in ("baseline", "refree"):
        r = RUNNERS["verilator"].run(batch, tables, [job], mode, grad=grad, lr=LR,
                                     poolings=bad.get("poolings"), tag=f"{mode}-" + what.replace(" ", "-"))
        assert r.errors == [code], mode
        assert r.after == r.before, mode
        assert r.counters[0]["pooled_writes"] == r.counters[0]["table_writes"] == 0, mode


@pytest.mark.parametrize("job", [JOB_FORWARD, JOB_BACKWARD], ids=["forward", "backward"])
def test_baseline_writes_nothing_before_the_checks_verdict(job):
    """``baseline`` streams a part beside its analysis and the batch check: a bad index in the
    last of 64 bags (8 parts of 8 bags, 80 lookups), found while the check reads the later
    parts' indices, after the first part's updated rows reached the write gate (without its
    hold, 10 rows were written: measured), which held them: nothing written."""
    rng = np.random.default_rng(5)
    indices = rng.integers(0, 8, 640)
    indices[-1] = 99
    batch = Batch.__new__(Batch)        # bypass the host's checks: the engine must catch it
    object.__setattr__(batch, "indices", indices.astype(np.int64))
    object.__setattr__(batch, "offsets", np.arange(0, 641, 10, dtype=np.int64))
    object.__setattr__(batch, "batch_size", 64)
    object.__setattr__(batch, "per_sample_weights", None)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    grad = rng.standard_normal((64, DIM)).astype(np.float32)
    r = RUNNERS["verilator"].run(batch, tables, [job], "baseline", grad=grad, lr=LR, tag="baseline-late-bad-index")
    assert r.errors == [ErrorCode.INDEX_OUT_OF_RANGE]
    assert r.after == r.before
    assert r.counters[0]["pooled_writes"] == r.counters[0]["table_writes"] == 0


def _table(lay, t, **kw):
    """The layout with table t's descriptor (base, rows, stride) changed."""
    descs = [dict(zip(("base", "rows", "stride"), d)) for d in lay.tables]
    descs[t].update(kw)
    return replace(lay, tables=tuple((d["base"], d["rows"], d["stride"]) for d in descs))


# (what, the bad layout the configuration describes, the jobs it is bad for)
BAD_MAPS = [
    ("tables overlap", lambda lay: _table(lay, 1, base=lay.tables[0][0] + 3), (JOB_FORWARD, JOB_BACKWARD)),
    ("rows overlap", lambda lay: _table(lay, 0, stride=0), (JOB_FORWARD, JOB_BACKWARD)),
    ("table past memory", lambda lay: _table(lay, 1, base=(1 << ADDR_BITS) - 4), (JOB_FORWARD, JOB_BACKWARD)),
    ("indices on a table", lambda lay: replace(lay, indices=lay.tables[1][0] + 5), (JOB_FORWARD, JOB_BACKWARD)),
    ("pooled on a table", lambda lay: replace(lay, pooled=lay.tables[0][0] + 7), (JOB_FORWARD,)),
    ("gradient on a table", lambda lay: replace(lay, grad=lay.tables[1][0] - 2), (JOB_BACKWARD,)),
]


@pytest.mark.parametrize("job", [JOB_FORWARD, JOB_BACKWARD], ids=["forward", "backward"])
@pytest.mark.parametrize("what,bad_layout,bad_for", BAD_MAPS, ids=[b[0] for b in BAD_MAPS])
def test_bad_memory_maps_are_refused_before_any_access(what, bad_layout, bad_for, job):
    """ACCESS_OUTSIDE_TABLES: descriptors that overlap or leave memory, staging arrays on a
    table; memory unchanged and nothing read.  The pooled output (gradient) only matters to
    the job that writes (reads) it: the other job runs and equals the golden model."""
    rng = np.random.default_rng(4)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32) for _ in range(2)]
    batch = make_batch([[1, 2], [0, 3, 3], [5], [4], [], [6, 1]], T=2)
    grad = rng.standard_normal((3, 2 * DIM)).astype(np.float32)
    r = RUNNERS["verilator"].run(batch, tables, [job], "refree", grad=grad, lr=LR,
                                 config_layout=bad_layout, tag="map-" + what.replace(" ", "-"))
    if job in bad_for:
        assert r.errors == [ErrorCode.ACCESS_OUTSIDE_TABLES]
        assert r.after == r.before
        assert r.counters[0]["input_reads"] == r.counters[0]["table_reads"] == 0
    else:
        assert r.errors == [0]
        assert r.counters[0]["input_reads"] > 0


def test_icarus_worked_example():
    """Icarus reads undefined memory as X: this also checks that no tagged table is read
    before the engine has written it (it found the hash and class tables' power-up state,
    and one-statement comb blocks that Icarus never ran: see ``icarus_fixup``)."""
    rng = np.random.default_rng(0)
    bags = [[5, 2, 0], [5, 2, 6], [5, 2], [1]]
    weighted = make_batch(bags, weights=np.array([0.5, -2, 1, 3, 1, 1, 0.25, 1, 7], np.float32))
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    for mode, pooling, batch in (("baseline", "sum", make_batch(bags)), ("refree", "mean", make_batch(bags)),
                                 ("dedup", "sum", weighted)):
        check_step(batch, tables, mode, sim="icarus", poolings=[pooling], max_cycles=3000)


def config_file(path):
    """A generator configuration equal to the tests' engine, fold lanes too (the runners'
    default, 16, not the configuration's, 64), so that the command line shares their builds:
    the bare engine's with ``--memory port``, test_lrdimm_core's with DDR4."""
    p = PARAMS
    path.write_text(f"[engine]\ndim = {DIM}\nmax_tables = {MAX_TABLES}\naddr_bits = {ADDR_BITS}\n"
                    f"div_lanes = 4\nfold_lanes = 16\n[parts]\nindex_width = {p.index_width}\nmax_bags = {p.max_bags}\n"
                    f"max_lookups = {p.max_lookups}\nmax_distinct_rows = {p.max_distinct_rows}\n"
                    f"max_bag_len = {p.max_bag_len}\nradix_bits = {p.radix_bits}\n"
                    f"[dram]\nranks = {DRAM.ranks}\nrows = {DRAM.rows}\n")
    return path


def write_step_inputs(tmp_path, seed, B, rows, dim, max_bag):
    """batch.npz (two tables of B bags), tables.npz and grad.npy for `refree step`."""
    from refree.golden.batch import save_batch
    rng = np.random.default_rng(seed)
    bags = [list(rng.integers(0, min(rows), rng.integers(0, max_bag))) for _ in range(2 * B)]
    save_batch(tmp_path / "batch.npz", make_batch(bags, T=2))
    np.savez(tmp_path / "tables.npz", **{f"table_{t}": rng.standard_normal((n, dim)).astype(np.float32)
                                         for t, n in enumerate(rows)})
    np.save(tmp_path / "grad.npy", rng.standard_normal((B, 2 * dim)).astype(np.float32))


@pytest.mark.parametrize("mode", ["baseline", "refree"])
def test_cli_step_rtl_writes_the_same_bytes_as_golden(tmp_path, mode, capsys):
    """`refree step --engine rtl` == `--engine golden`, file for file, byte for byte; two
    tables of D = 12 (padded to one beat on the engine) and a batch of several parts."""
    import json
    from refree.gen.cli import main
    write_step_inputs(tmp_path, 8, B=10, rows=(40, 45), dim=12, max_bag=7)
    cfg = config_file(tmp_path / "engine.toml")
    common = [str(tmp_path / "batch.npz"), "--table", str(tmp_path / "tables.npz"), "--grad",
              str(tmp_path / "grad.npy"), "--lr", "0.05", "--mode", mode, "--config", str(cfg),
              "--pooling", "sum,mean"]
    assert main(["step", *common, "--out", str(tmp_path / "golden")]) == 0
    # refree: through the host's DDR4 writes and reads; baseline: preloaded (the backdoor)
    host_io = ["--host-io"] if mode == "refree" else []
    assert main(["step", *common, "--engine", "rtl", "--out", str(tmp_path / "rtl"), *host_io]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["counters"]["forward"]["parts"] > 2
    assert report["top"].startswith("LrdimmNmp") and report["preloaded"].startswith("no") == bool(host_io)
    for name in ("pooled.npy", "table.npz"):
        assert (tmp_path / "golden" / name).read_bytes() == (tmp_path / "rtl" / name).read_bytes()


def fst_scopes_and_names(path):
    """The hierarchy of an FST file (its gzip-packed hierarchy block) as text: enough to find
    scope and signal names."""
    import struct
    import zlib
    data, pos, hier = path.read_bytes(), 0, b""
    assert data[0] == 0, "not an FST file (no header block first)"
    while pos < len(data):
        kind, length = data[pos], struct.unpack(">Q", data[pos + 1:pos + 9])[0]
        if kind == 4:                               # FST_BL_HIER: 8 bytes of size, then gzip
            hier += zlib.decompress(data[pos + 17:pos + 1 + length], 31)
        pos += 1 + length
    return hier.decode("latin-1")


def test_cli_step_rtl_writes_the_waves(tmp_path, capsys):
    """`refree step --engine rtl --waves FILE` (Icarus, the bare engine): the outputs are the
    golden model's, and FILE is an FST of the run with the engine's blocks and signals by
    name.  --waves without the RTL, or into a folder that is not there: exit 2, nothing run."""
    from refree.gen.cli import main
    write_step_inputs(tmp_path, 10, B=4, rows=(20, 25), dim=16, max_bag=5)
    cfg = config_file(tmp_path / "engine.toml")
    common = [str(tmp_path / "batch.npz"), "--table", str(tmp_path / "tables.npz"), "--grad",
              str(tmp_path / "grad.npy"), "--lr", "0.05", "--config", str(cfg)]
    for bad, why in ((["--waves", str(tmp_path / "w.fst")], "needs --engine rtl"),
                     (["--engine", "rtl", "--waves", str(tmp_path / "no" / "w.fst")], "no writable folder")):
        assert main(["step", *common, *bad, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("refree: error: --waves") and why in err, err
        assert not (tmp_path / "x").exists()
    assert main(["step", *common, "--out", str(tmp_path / "golden")]) == 0
    assert main(["step", *common, "--engine", "rtl", "--sim", "icarus", "--memory", "port",
                 "--waves", str(tmp_path / "w.fst"), "--out", str(tmp_path / "rtl")]) == 0
    for name in ("pooled.npy", "table.npz"):
        assert (tmp_path / "golden" / name).read_bytes() == (tmp_path / "rtl" / name).read_bytes()
    hier = fst_scopes_and_names(tmp_path / "w.fst")
    for name in ("engine", "analyzer", "datapath", "busy", "mem__cmd__valid"):
        assert name in hier, name


def test_cli_step_rtl_adagrad_two_steps_write_the_same_bytes_as_golden(tmp_path, capsys):
    """Row-wise Adagrad through the command line: pooled outputs, tables and states of two
    steps (the second from the first one's files) byte-identical to the golden engine's."""
    from refree.gen.cli import main
    write_step_inputs(tmp_path, 9, B=6, rows=(30, 35), dim=16, max_bag=6)
    cfg = config_file(tmp_path / "engine.toml")
    for k in range(2):
        common = [str(tmp_path / "batch.npz"), "--grad", str(tmp_path / "grad.npy"), "--lr", "0.05",
                  "--mode", "refree", "--config", str(cfg), "--optimizer", "rowwise-adagrad"]
        common += (["--table", str(tmp_path / "tables.npz")] if k == 0 else
                   ["--table", str(tmp_path / "golden0" / "table.npz"), "--state",
                    str(tmp_path / "golden0" / "state.npz")])
        assert main(["step", *common, "--out", str(tmp_path / f"golden{k}")]) == 0
        assert main(["step", *common, "--engine", "rtl", "--out", str(tmp_path / f"rtl{k}")]) == 0
        for name in ("pooled.npy", "table.npz", "state.npz"):
            assert (tmp_path / f"golden{k}" / name).read_bytes() == (tmp_path / f"rtl{k}" / name).read_bytes()


def test_cli_step_rtl_rejects_what_the_engine_does_not_run(tmp_path, capsys):
    from refree.gen.cli import main
    from refree.golden.batch import save_batch
    save_batch(tmp_path / "batch.npz", make_batch([[1, 2], [0]]))
    np.save(tmp_path / "table.npy", np.ones((3, 12), np.float32))
    np.save(tmp_path / "grad.npy", np.ones((2, 12), np.float32))
    base = ["step", str(tmp_path / "batch.npz"), "--table", str(tmp_path / "table.npy"), "--grad",
            str(tmp_path / "grad.npy"), "--lr", "0.1", "--engine", "rtl", "--out", str(tmp_path / "o"),
            "--config", str(config_file(tmp_path / "engine.toml"))]
    # Adagrad's mean of squares would divide by the padded vector length
    assert main(base + ["--optimizer", "rowwise-adagrad"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dedup", "refree"])
def test_three_chained_adagrad_steps_beyond_four_times_the_distinct_row_limit(mode):
    """Backward by rows at scale (`make test-slow`): a Meta-calibrated batch of 245 distinct
    rows, beyond 4x a part's 32, in several row groups and forward parts; three chained
    row-wise Adagrad steps with the state in memory, each bit for bit as the golden model."""
    from refree.golden.traces import make_trace
    tr = make_trace("meta", 32, 1, seed=5, num_rows=4000)
    batch = tr.batch
    assert len(np.unique(batch.indices)) > 4 * PARAMS.max_distinct_rows
    rng = np.random.default_rng(11)
    tables = [rng.standard_normal((tr.num_rows[0], DIM)).astype(np.float32)]
    state = [np.zeros(tr.num_rows[0], np.float32)]
    for k in range(3):
        grad = rng.standard_normal((32, DIM)).astype(np.float32)
        got = check_step(batch, tables, mode, grad=grad, optimizer="rowwise-adagrad", state=state, lr=0.1,
                         seed=k, outcome=True)
        assert got.counters["backward"]["parts"] >= 8 and got.counters["forward"]["parts"] > 4
        tables, state = got.tables, got.state
