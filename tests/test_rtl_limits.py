"""The testbench's cycle limit of a job (verif/engine_run.py: cycle_limit) and what a run that
hits it says, in the testbench and on the command line."""
import numpy as np
import pytest

from refree.golden.batch import Batch, save_batch
from refree.hw.engine.engine import JOB_BACKWARD, JOB_FORWARD
from refree.verif.engine_run import EngineRunner, EngineTimeout, cycle_limit

# The engine of tests/test_engine_step.py (so the build is shared).
from test_engine_step import ADDR_BITS, DIM, MAX_TABLES, PARAMS, config_file  # noqa: E402

# The worked example of docs/design.md section 2: 9 lookups, 4 bags, rows 0, 1, 2, 5, 6.
WORKED = Batch(np.array([5, 2, 0, 5, 2, 6, 5, 2, 1], np.int64), np.array([0, 3, 6, 8, 9], np.int64), 4)


def test_the_limit_follows_the_job():
    """100,000 + 64 (N + T B) + 4 W, W = 4 clocks x the baseline job's beats; D = 64: rows of
    4 beats, input 3 beats (offsets 40 bytes, indices 72)."""
    fixed = 100_000 + 64 * (9 + 4)
    assert cycle_limit(WORKED, 64, JOB_FORWARD) == fixed + 4 * 4 * (3 + 9 * 4 + 4 * 4)
    assert cycle_limit(WORKED, 64, JOB_BACKWARD) == fixed + 4 * 4 * (3 + 3 * 9 * 4)
    # Adagrad: two state beats a lookup, and the vector unit's time for each of the 5 rows
    assert cycle_limit(WORKED, 64, JOB_BACKWARD, "rowwise-adagrad", 4) == \
        fixed + 4 * 4 * (3 + 3 * 9 * 4 + 2 * 9) + 4 * 5 * (64 // 4 + 2 * 64 + 256)
    assert cycle_limit(WORKED, 64, JOB_FORWARD, "rowwise-adagrad") == cycle_limit(WORKED, 64, JOB_FORWARD)


def test_the_limit_covers_the_slowest_job_measured():
    """MovieLens B = 1024 on one DDR4-2400 rank: baseline's backward took 1,290,076 cycles,
    past the old fixed limit of 1,000,000; the limit now leaves it a margin of more than 3."""
    from refree.golden.traces import make_trace
    batch = make_trace("movielens", 1024, 1, batch_index=0).batch
    assert cycle_limit(batch, 64, JOB_BACKWARD) > 3 * 1_290_076


def test_a_job_past_its_limit_is_stopped_and_named():
    """An explicit max_cycles stops the first job that runs past it; the error names the job,
    the mode and the limit."""
    runner = EngineRunner(PARAMS, DIM, MAX_TABLES, ADDR_BITS, "verilator")
    tables = [np.ones((8, DIM), np.float32)]
    grad = np.ones((4, DIM), np.float32)
    with pytest.raises(EngineTimeout) as info:
        runner.step(tables, WORKED, grad, 0.5, "refree", max_cycles=40, tag="limit")
    e = info.value
    assert (e.job, e.mode, e.limit) == ("forward", "refree", 40)
    assert str(e).startswith("the engine did not finish the forward job of refree within 40 cycles "
                             "(the max_cycles given by the caller; the run's files are in ")


def test_the_command_line_says_why_a_job_stopped(tmp_path, capsys, monkeypatch):
    """`refree step --engine rtl` whose job hits the testbench's limit: exit status 1, the
    command's own words on stderr (not cocotb's summary), nothing written."""
    import refree.verif.engine_run as engine_run
    from refree.gen.cli import main
    monkeypatch.setattr(engine_run, "cycle_limit", lambda batch, dim, job, *a: 40 + 1000 * job)
    cfg = config_file(tmp_path / "engine.toml")
    save_batch(tmp_path / "batch.npz", WORKED)
    np.save(tmp_path / "table.npy", np.ones((8, DIM), np.float32))
    np.save(tmp_path / "grad.npy", np.ones((4, DIM), np.float32))
    code = main(["step", str(tmp_path / "batch.npz"), "--table", str(tmp_path / "table.npy"), "--grad",
                 str(tmp_path / "grad.npy"), "--lr", "0.5", "--mode", "dedup", "--engine", "rtl",
                 "--memory", "port", "--config", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("refree: error: the engine did not finish the forward job of dedup within 40 "
                          "cycles (the testbench's limit for this job, 100,000 + 64 x (lookups + bags)")
    assert "cocotb" not in err
    assert not (tmp_path / "o").exists()
