"""The engine's forward pass on generated Verilog (cocotb, Verilator; a smaller set on
Icarus): a batch in memory behind a port with random latency and backpressure; pooled
outputs, the untouched tables and the counters against the golden model."""
import numpy as np
import pytest
from amaranth.hdl import Const

from refree.golden.batch import Batch
from refree.golden.errors import ErrorCode
from refree.golden.model import step
from refree.golden.planner import PartLimits
from refree.hw.engine.engine import Engine, MODE_BASELINE, MODE_DEDUP, MODE_REFREE
from refree.hw.engine.params import EngineParams
from refree.verif.staging import layout, pack, unpack_rows
from refree.verif.toolchain import SimBuild, build_root, require_simulator, verilog_for

MODES = {"baseline": MODE_BASELINE, "dedup": MODE_DEDUP, "refree": MODE_REFREE}
# Small buffers, so that a test batch needs several parts; bags as long as MovieLens's.
PARAMS = EngineParams(index_width=16, max_bags=8, max_lookups=64, max_distinct_rows=24,
                      max_bag_len=20, radix_bits=4)
DIM, MAX_TABLES, ADDR_BITS = 16, 4, 24
_BUILDS = {}


def engine_build(sim):
    """One Verilog design and one simulator build per configuration, reused by every test."""
    if sim not in _BUILDS:
        design = verilog_for(Engine, name="engine", subdir="engine", params=PARAMS, dim=DIM,
                             max_tables=MAX_TABLES, addr_bits=ADDR_BITS)
        # public: cocotb reaches the top-level ports through VPI
        _BUILDS[sim] = (design, SimBuild(sim, [design.verilog], "engine", design.directory / sim,
                                         public=True).build())
    return _BUILDS[sim]


def unpack_fields(layout_, value):
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout_}


def run_engine(batch, tables, mode, sim="verilator", seed=0, latency=(1, 8), ready_p=0.8,
               tag="job", max_cycles=100_000):
    require_simulator(sim)
    design, build = engine_build(sim)
    eng = design.component
    lay = layout(batch, tables)
    mem = pack(batch, tables, lay)
    cfg = {"mode": MODES[mode], "batch_size": batch.batch_size, "num_tables": batch.num_tables,
           "num_indices": len(batch.indices), "offsets_addr": lay.offsets,
           "indices_addr": lay.indices, "pooled_addr": lay.pooled,
           "tables": [{"base": b, "rows": r, "stride": s} for b, r, s in lay.tables]
           + [{"base": 0, "rows": 0, "stride": 0}] * (MAX_TABLES - len(lay.tables))}
    config = Const.cast(eng.Config.const(cfg)).value
    run_dir = build_root() / "engine" / "runs" / f"{sim}-{tag}-{mode}-{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    addrs = np.array(sorted(mem), np.int64)
    data = np.array([list(mem[a].to_bytes(64, "little")) for a in addrs], np.uint8).reshape(-1, 64)
    np.savez(run_dir / "job.npz", addrs=addrs, data=data, config=str(config),
             addr_bits=ADDR_BITS, latency=np.array(latency), ready_p=ready_p, seed=seed,
             max_cycles=max_cycles)
    build.run("refree.verif.engine_tb", run_dir, env={"REFREE_JOB": str(run_dir / "job.npz"),
                                                      "REFREE_OUT": str(run_dir / "out.npz")})
    with np.load(run_dir / "out.npz", allow_pickle=True) as out:
        after = {int(a): int.from_bytes(bytes(d), "little") for a, d in zip(out["addrs"], out["data"])}
        counters = unpack_fields(eng.Counters, int(out["counters"]))
        return mem, after, lay, int(out["error"]), counters


def make_batch(bags, T=1):
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    return Batch(idx, offs, len(bags) // T)


def check_forward(batch, tables, mode, **kw):
    before, mem, lay, error, counters = run_engine(batch, tables, mode, **kw)
    assert error == 0
    B, T = batch.batch_size, batch.num_tables
    pooled = unpack_rows(mem, lay.pooled, B * T, lay.row_beats, DIM).reshape(B, T * DIM)
    limits = PartLimits(PARAMS.max_bags, PARAMS.max_lookups, PARAMS.max_distinct_rows, PARAMS.max_bag_len)
    want = step(tables, batch, np.zeros((B, T * DIM), np.float32), 0.0, mode=mode, limits=limits)
    assert np.array_equal(pooled.view(np.uint32), want.pooled.view(np.uint32))
    c = want.counts
    assert counters["row_reads"] == c["forward"]["reads"]
    assert counters["adds"] == c["forward"]["adds"]
    assert counters["muls"] == c["forward"]["muls"]
    assert counters["parts"] == c["parts"]
    assert counters["pooled_writes"] == B * T * lay.row_beats
    # only the pooled output changed: every other beat is as the host left it
    pooled_beats = set(range(lay.pooled, lay.pooled + B * T * lay.row_beats))
    assert {a: v for a, v in mem.items() if a not in pooled_beats} == \
        {a: v for a, v in before.items() if a not in pooled_beats}
    return counters


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_worked_example(mode):
    rng = np.random.default_rng(0)
    batch = make_batch([[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    check_forward(batch, tables, mode)


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_two_tables_several_parts_empty_bags_repeated_rows(mode):
    rng = np.random.default_rng(1)
    bags = [list(rng.zipf(1.3, rng.integers(0, 8)) % 30) for _ in range(2 * 12)]
    bags[3], bags[5], bags[20] = [], [7, 7, 7], [29] * 8
    batch = make_batch(bags, T=2)
    tables = [rng.standard_normal((30, DIM)).astype(np.float32) for _ in range(2)]
    tables[1][7] = [-0.0, np.inf, 1e-45, -1e-45, 3.4e38, 3.4e38, 0, 1, 2, 3, 4, 5, 6, 7, 8, np.nan]
    counters = check_forward(batch, tables, mode, seed=2, latency=(1, 20), ready_p=0.5)
    assert counters["parts"] > 2


def test_movielens_window_refree():
    from refree.golden.traces import make_trace
    trace = make_trace("movielens", 16, 1, batch_index=40)
    rng = np.random.default_rng(3)
    rows = int(trace.batch.indices.max()) + 1
    tables = [rng.standard_normal((rows, DIM)).astype(np.float32)]
    counters = check_forward(trace.batch, tables, "refree", seed=4)
    assert counters["adds"] < sum(max(n - 1, 0) for n in np.diff(trace.batch.offsets))  # sharing


BAD = [
    ("decreasing offsets", dict(offsets=[0, 3, 2, 5]), ErrorCode.MALFORMED_OFFSETS),
    ("offsets not from 0", dict(offsets=[1, 2, 3, 5]), ErrorCode.MALFORMED_OFFSETS),
    ("last offset short", dict(offsets=[0, 2, 3, 4]), ErrorCode.MALFORMED_OFFSETS),
    ("index past the table", dict(indices=[1, 2, 99, 0, 1]), ErrorCode.INDEX_OUT_OF_RANGE),
    ("negative index", dict(indices=[1, 2, -1, 0, 1]), ErrorCode.INDEX_OUT_OF_RANGE),
    ("bag too long", dict(offsets=[0, 0, 0, 21], indices=[1] * 21), ErrorCode.BAG_TOO_LONG),
]


@pytest.mark.parametrize("what,bad,code", BAD, ids=[b[0] for b in BAD])
def test_bad_batches_set_the_error_code_and_write_nothing(what, bad, code):
    rng = np.random.default_rng(2)
    batch = Batch.__new__(Batch)        # bypass the host's checks: the engine must catch it
    object.__setattr__(batch, "indices", np.array(bad.get("indices", [1, 2, 3, 0, 1]), np.int64))
    object.__setattr__(batch, "offsets", np.array(bad.get("offsets", [0, 2, 3, 5]), np.int64))
    object.__setattr__(batch, "batch_size", 3)
    object.__setattr__(batch, "per_sample_weights", None)
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    before, after, lay, error, counters = run_engine(batch, tables, "refree", tag=what.replace(" ", "-"))
    assert error == code
    assert after == before
    assert counters["pooled_writes"] == 0


def test_icarus_worked_example_refree():
    rng = np.random.default_rng(0)
    batch = make_batch([[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    tables = [rng.standard_normal((8, DIM)).astype(np.float32)]
    check_forward(batch, tables, "refree", sim="icarus")
