"""Slipstream's stale set in the buffer chip (hw/engine/stale_set.py), generated Verilog
under cocotb and Verilator, on test_lrdimm_core's chip: a training step whose backward job
loads a stale list skips those rows' lookups (no merge, no read, no write) in every mode,
bit for bit as the golden step with the same ``stale`` rows (``check_step``: outputs,
tables, states, the engine's count of lookups skipped, the skipped rows untouched, the
ranks' traffic equal to the engine's counters); the set stays for the next backward job,
which skips the same rows without loading it again; a list with a pair more than its set
holds is refused before anything is written."""
import numpy as np
import pytest

from refree.golden.errors import ErrorCode
from refree.golden.model import step
from refree.hw.engine.engine import JOB_BACKWARD
from refree.hw.engine.stale_set import ENTRY_TABLE_SHIFT, fit_stale, stale_key, table_bits
from refree.hw.lrdimm.hot_row_store import set_index

from refree.verif.engine_run import limits_of
from refree.verif.staging import unpack_rows

from test_engine_step import DIM, LR, MAX_TABLES, PARAMS, check_step
from test_lrdimm_core import RUNNER, STALE
from test_lrdimm_hot import B, ROWS, T, skewed_batch


def stale_rows(batch, seed):
    """About a third of each table's rows looked up, the hottest among them (Slipstream's
    candidates are the hot rows)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(T):
        counts = np.bincount(batch.table_slice(t)[0], minlength=ROWS)
        seen = counts.nonzero()[0]
        mask = np.zeros(ROWS, bool)
        mask[rng.choice(seen, size=len(seen) // 3, replace=False)] = True
        mask[counts.argmax()] = True
        out.append(mask)
    return out


@pytest.mark.parametrize("mode,optimizer,groups", [("baseline", "sgd", None), ("dedup", "sgd", [2, 1]),
                                                   ("refree", "sgd", None), ("refree", "rowwise-adagrad", None)])
def test_a_step_skips_the_stale_rows(mode, optimizer, groups):
    """(``dedup`` by two row groups in table 0: a stale lookup among another group's is
    passed over with them; table 1 pools by mean: a bag keeps its whole length.)"""
    batch = skewed_batch(3, longest=6)
    rng = np.random.default_rng(4)
    tables = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((B, T * DIM)).astype(np.float32)
    stale = stale_rows(batch, 5)
    got = check_step(batch, tables, mode, grad=grad, runner=RUNNER, outcome=True, optimizer=optimizer,
                     poolings=["sum", "mean"], stale=stale, groups=groups)
    kept = got.counters["stale_rows"]
    assert all(np.array_equal(k, s) for k, s in zip(kept, stale))      # (64 entries hold them all)
    assert got.counters["backward"]["stale_skipped"] >= len(batch.indices) // 4


def test_the_set_stays_for_the_next_backward_job():
    batch = skewed_batch(8, longest=6)
    rng = np.random.default_rng(9)
    tables = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((B, T * DIM)).astype(np.float32)
    entries, kept = fit_stale(stale_rows(batch, 10), STALE, PARAMS.index_width, MAX_TABLES)
    run = RUNNER.run(batch, tables, [JOB_BACKWARD, JOB_BACKWARD], "refree", grad=grad, lr=LR, stale_entries=entries)
    assert run.errors == [0, 0]
    first, second = run.counters
    assert first["stale_load_cycles"] >= len(entries) + STALE.entries // STALE.ways and second["stale_load_cycles"] == 0
    assert second["stale_skipped"] == first["stale_skipped"] > 0
    assert second["stale_rows_skipped"] == first["stale_rows_skipped"] > 0       # (each job counts afresh)
    want = tables
    for _ in range(2):
        want = step(want, batch, grad, LR, mode="refree", limits=limits_of(PARAMS), stale=kept).tables
    for t, (base, rows, stride) in enumerate(run.lay.tables):
        got = unpack_rows(run.after, base, rows, stride, DIM)
        assert np.array_equal(got.view(np.uint32), want[t].view(np.uint32)), f"table {t} differs"


def test_a_list_past_a_sets_ways_is_refused_and_nothing_written():
    batch = skewed_batch(6, longest=6)
    rng = np.random.default_rng(7)
    tables = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(T)]
    grad = rng.standard_normal((B, T * DIM)).astype(np.float32)
    key_bits = PARAMS.index_width + table_bits(MAX_TABLES)
    one_set = [(t, r) for t in range(T) for r in range(ROWS)
               if set_index(stale_key(t, r, PARAMS.index_width), key_bits, STALE.set_bits) == 0]
    assert len(one_set) > STALE.ways
    entries = [r | t << ENTRY_TABLE_SHIFT for t, r in one_set[:STALE.ways + 1]]
    run = RUNNER.run(batch, tables, [JOB_BACKWARD], "refree", grad=grad, lr=LR, stale_entries=entries)
    assert run.errors == [ErrorCode.STALE_SET_FULL]
    assert run.after == run.before
    # the same list less its last pair fits: the step runs
    run = RUNNER.run(batch, tables, [JOB_BACKWARD], "refree", grad=grad, lr=LR, stale_entries=entries[:-1])
    assert run.errors == [0] and run.counters[0]["stale_skipped"] > 0
