"""The batch checker against a reference of the design's checks, on random batches with and
without errors: the verdict, the indices it hands to the engine, and the cycles it takes
(a beat of indices a cycle when the memory keeps up)."""
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.errors import ErrorCode
from refree.hw.engine.batch_checker import BatchChecker
from refree.hw.engine.engine import Engine
from refree.hw.engine.params import EngineParams

PARAMS = EngineParams(max_bags=16, max_lookups=64, max_distinct_rows=64, max_bag_len=12)
MAX_TABLES = 3
OFFSETS_AT, INDICES_AT = 0x100, 0x400       # beat addresses
LATENCY = 12
# (an Engine is built for its Config layout only)
pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")


def reference(offsets, indices, rows, B, weighted, mean):
    """The verdict by the design's precedence (docs/design.md, golden/batch.py)."""
    T = len(rows)
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(indices):
        return ErrorCode.MALFORMED_OFFSETS
    if weighted and any(mean):
        return ErrorCode.WEIGHTS_WITH_MEAN
    for t in range(T):
        seg = indices[offsets[t * B]:offsets[(t + 1) * B]]
        if ((seg < 0) | (seg >= rows[t])).any():
            return ErrorCode.INDEX_OUT_OF_RANGE
    if (np.diff(offsets) > PARAMS.max_bag_len).any():
        return ErrorCode.BAG_TOO_LONG
    return ErrorCode.OK


def beats_of(arr):
    """The array's beats in its own width (int32 or int64, as the host lays it out)."""
    arr = np.asarray(arr)
    raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    raw += bytes(-len(raw) % 64)
    return [int.from_bytes(raw[i:i + 64], "little") for i in range(0, len(raw), 64)]


def run_checks(cases):
    """Each case (offsets, indices, rows, B, weighted, mean, share_count or None) on one
    checker; returns (error, shared indices, cycles from start to done) per case."""
    cfg_layout = Engine(PARAMS, max_tables=MAX_TABLES).Config
    dut = BatchChecker(PARAMS, cfg_layout, MAX_TABLES, 32)
    memory = {}
    results = []

    def server(port):
        async def serve(ctx):
            pending, cycle = deque(), 0
            ctx.set(port.cmd.ready, 1)
            while True:
                head = pending and pending[0][0] <= cycle
                ctx.set(port.rsp.valid, bool(head))
                ctx.set(port.rsp.payload, pending[0][1] if head else 0)
                _, _, cv, addr, rr = await ctx.tick().sample(port.cmd.valid, port.cmd.payload.addr, port.rsp.ready)
                cycle += 1
                if head and rr:
                    pending.popleft()
                if cv:
                    pending.append((cycle + LATENCY, memory.get(addr, 0)))
        return serve

    async def bench(ctx):
        rng = np.random.default_rng(5)
        for offsets, indices, rows, B, weighted, mean, share_count in cases:
            memory.clear()
            memory.update({OFFSETS_AT + i: v for i, v in enumerate(beats_of(offsets))})
            memory.update({INDICES_AT + i: v for i, v in enumerate(beats_of(indices))})
            c = dut.config
            for field, v in (("batch_size", B), ("num_tables", len(rows)), ("num_indices", len(indices)),
                             ("offsets_addr", OFFSETS_AT), ("indices_addr", INDICES_AT), ("weighted", weighted),
                             ("offsets_int32", offsets.dtype == np.int32),
                             ("indices_int32", np.asarray(indices).dtype == np.int32)):
                ctx.set(getattr(c, field), v)
            for t in range(MAX_TABLES):
                ctx.set(c.tables[t].rows, rows[t] if t < len(rows) else 0)
                ctx.set(c.tables[t].mean, mean[t] if t < len(rows) else 0)
            ctx.set(dut.start, 1)
            ctx.set(dut.share, share_count is not None)
            shared, cycles = [], 0
            while True:
                ctx.set(dut.shared.ready, bool(rng.random() < 0.7))
                if cycles == 30 and share_count is not None:
                    ctx.set(dut.share_set, 1)
                    ctx.set(dut.share_count, share_count)
                _, _, sv, sr, sp, done, error = await ctx.tick().sample(
                    dut.shared.valid, dut.shared.ready, dut.shared.payload, dut.done, dut.error)
                ctx.set(dut.start, 0)
                ctx.set(dut.share_set, 0)
                cycles += 1
                if sv and sr:
                    shared.append(sp)
                if done and cycles > 1:
                    break
                assert cycles < 20_000, "the check never ends"
            results.append((ErrorCode(error), shared, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_process(server(dut.offsets_port))
    sim.add_process(server(dut.indices_port))
    sim.run()
    return results


def random_case(rng, T, B, error):
    rows = [int(rng.integers(1, 40)) for _ in range(T)]
    lengths = rng.integers(0, PARAMS.max_bag_len + 1, size=T * B)
    lengths[rng.random(T * B) < 0.2] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([rng.integers(0, rows[t], size=lengths[t * B:(t + 1) * B].sum())
                              for t in range(T)]).astype(np.int64)
    weighted, mean = False, [False] * T
    n = len(indices)
    if error == "index" and n:
        k = int(rng.integers(0, n))
        t = int(np.searchsorted(offsets[::B][1:], k, side="right"))
        indices[k] = rows[t] + int(rng.integers(0, 3)) if rng.random() < 0.7 else -1 - int(rng.integers(0, 5))
    elif error == "offsets":
        k = int(rng.integers(1, len(offsets)))
        offsets[k] = offsets[k - 1] - 1
    elif error == "end":
        offsets[-1] += 1
    elif error == "long":
        b = int(rng.integers(0, T * B))
        extra = PARAMS.max_bag_len + 1 - lengths[b]
        offsets[b + 1:] += extra
        t = b // B
        indices = np.concatenate([indices[:offsets[b]], rng.integers(0, rows[t], size=extra),
                                  indices[offsets[b]:]]).astype(np.int64)
    elif error == "mean":
        weighted, mean = True, [bool(rng.random() < 0.5) for _ in range(T - 1)] + [True]
    return offsets, indices, rows, B, weighted, mean


def test_verdicts_and_shared_indices_match_the_reference():
    rng = np.random.default_rng(1)
    cases = []
    for error in [None] * 6 + ["index"] * 10 + ["offsets", "end", "long", "long", "mean"]:
        T, B = int(rng.integers(1, MAX_TABLES + 1)), int(rng.integers(1, 7))
        case = random_case(rng, T, B, error)
        share = None if rng.random() < 0.5 else int(rng.integers(0, len(case[1]) + 1))
        # int32 offsets and indices, either or both (half a beat of indices a cycle)
        narrow = rng.integers(0, 2, size=2)
        case = (case[0].astype(np.int32) if narrow[0] else case[0],
                case[1].astype(np.int32) if narrow[1] else case[1], *case[2:])
        cases.append((*case, share))
    # a table with no indices between two, and tables of fewer indices than a beat
    cases.append((np.array([0, 3, 3, 3, 5, 5, 6], np.int64), np.array([0, 1, 2, 0, 3, 1]), [3, 4, 2], 2,
                  False, [False] * 3, None))
    cases.append((np.array([0, 3, 3, 3, 5, 5, 6], np.int64), np.array([0, 1, 2, 0, 3, 2]), [3, 4, 2], 2,
                  False, [False] * 3, None))
    for last in (1, 2):             # table 1 empty; table 2's last index in or out of range
        cases.append((np.array([0, 3, 3, 3, 3, 3, 6], np.int64), np.array([0, 1, 2, 0, 1, last]), [3, 4, 2],
                      2, False, [False] * 3, None))
    # int32: a negative index (sign-extended, out of range), a negative offset, and 16
    # indices a beat read by halves, with the first indices shared
    cases.append((np.array([0, 2, 4], np.int32), np.array([0, 1, -1, 2], np.int32), [3], 2, False, [False], None))
    # (a table of 2**32 rows: -1 zero-extended would lie inside it)
    cases.append((np.array([0, 2, 4], np.int32), np.array([0, 1, -1, 2], np.int32), [1 << 32], 2, False, [False],
                  None))
    cases.append((np.array([0, -2, 4], np.int32), np.array([0, 1, 1, 2], np.int32), [3], 2, False, [False], None))
    cases.append((np.array([0, 9, 20], np.int32), np.arange(20, dtype=np.int32) % 7, [7], 2, False, [False], 11))
    errors = set()
    for case, (error, shared, cycles) in zip(cases, run_checks(cases)):
        offsets, indices, rows, B, weighted, mean, share = case
        want = reference(offsets, indices, rows, B, weighted, mean)
        errors.add(want)
        assert error == want, (case, error, want)
        if share is not None and want in (ErrorCode.OK, ErrorCode.BAG_TOO_LONG):
            assert shared == [int(v) & (2**64 - 1) for v in indices[:share]]
    assert {ErrorCode.OK, ErrorCode.INDEX_OUT_OF_RANGE, ErrorCode.MALFORMED_OFFSETS, ErrorCode.BAG_TOO_LONG,
            ErrorCode.WEIGHTS_WITH_MEAN} <= errors


@pytest.mark.parametrize("T,B,narrow", [(1, 40, False), (3, 20, False), (3, 20, True)])
def test_takes_a_beat_of_indices_a_cycle(T, B, narrow):
    """Without sharing, and with a memory that keeps up, the indices take about a cycle per
    8 (a beat of int64, half a beat of int32; and one per table boundary), not one per index."""
    rng = np.random.default_rng(T)
    case = random_case(rng, T, B, None)
    if narrow:
        case = (case[0].astype(np.int32), case[1].astype(np.int32), *case[2:])
    (error, _, cycles), = run_checks([(*case, None)])
    offsets, indices = case[0], case[1]
    assert error == ErrorCode.OK
    bound = len(offsets) + -(-len(indices) // 8) + 2 * T + 2 * LATENCY + 8
    assert cycles <= bound, (cycles, bound, len(indices))
    assert cycles < len(offsets) + len(indices)         # what one index a cycle takes at least
