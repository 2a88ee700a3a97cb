"""The lookup buffer: every kept lookup once, each bag's lookups in index order, its
length and last flag right; in index order without ``interleave``; with it, two lookups
of one bag at least ``lanes`` outputs apart while that many bags still have lookups, and
(after the ramp, lane ``i`` starting in round ``i``) a lookup every cycle then; under
random backpressure on ``out``; replayed after the writes and beside them (a bag only once
it is whole and kept, the analyzer's rollback left out)."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.engine.lookup_buffer import LookupBuffer
from refree.hw.engine.params import EngineParams

PARAMS = EngineParams(max_bags=32, max_lookups=256, max_distinct_rows=64, max_bag_len=12)
MAX_CYCLES = 5_000


def make_part(rng, num_bags):
    """Bag lengths (some empty) and per bag its (row, weight) lookups."""
    lengths = rng.integers(0, PARAMS.max_bag_len + 1, size=num_bags)
    lengths[rng.random(num_bags) < 0.15] = 0
    return [[(int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1 << 32))) for _ in range(n)] for n in lengths]


def run(buf, parts, seed, ready_rate):
    """``parts``: (bags, num_bags kept, interleave, beside).  A part's lookups are written one a
    cycle; its replay starts after them, or with ``beside`` with ``start``, while they are
    written, ``num_bags`` growing as the analyzer's ``bags_kept`` does (the bags before the
    one being written, at most ``kept``) and ``final`` once all are in.  Returns per part the
    outputs as (cycle, row, weight, bag, len, last)."""
    rng = np.random.default_rng(seed)
    got = []

    async def bench(ctx):
        for bags, kept, interleave, beside in parts:
            writes = [(b, j == len(lookups) - 1, j == 0, row, weight)
                      for b, lookups in enumerate(bags) for j, (row, weight) in enumerate(lookups)]
            ctx.set(buf.start, 1)
            ctx.set(buf.replay, beside)
            ctx.set(buf.interleave, interleave)
            ctx.set(buf.num_bags, 0)
            ctx.set(buf.final, 0)
            await ctx.tick()
            ctx.set(buf.start, 0)
            ctx.set(buf.replay, 0)
            out, replay_at = [], 0 if beside else None
            for cycle in range(MAX_CYCLES):
                if writes:
                    b, last, first, row, weight = writes.pop(0)
                    ctx.set(buf.write, {"en": 1, "row": row, "weight": weight, "bag": b, "first": first, "last": last})
                    ctx.set(buf.num_bags, min(b, kept))
                else:
                    ctx.set(buf.write.en, 0)
                    ctx.set(buf.num_bags, kept)
                    ctx.set(buf.final, 1)
                    ctx.set(buf.replay, replay_at is None)
                    if replay_at is None:
                        replay_at = cycle
                ready = rng.random() < ready_rate
                ctx.set(buf.out.ready, ready)
                await ctx.delay(1e-9)
                if ready and ctx.get(buf.out.valid):
                    o = ctx.get(buf.out.payload)
                    out.append((cycle, o.row, o.weight, o.bag, o.len, o.last))
                if replay_at is not None and cycle > replay_at and not writes and not ctx.get(buf.busy):
                    break
                await ctx.tick()
                ctx.set(buf.replay, 0)
            else:
                raise AssertionError("the lookup buffer did not finish")
            got.append(out)

    sim = Simulator(buf)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def check(out, bags, kept, lanes, interleave, always_ready):
    want = {b: bags[b] for b in range(kept) if bags[b]}
    by_bag = {}
    for _, row, weight, bag, n, last in out:
        by_bag.setdefault(bag, []).append((row, weight))
        assert n == len(bags[bag]) and last == (len(by_bag[bag]) == n)
    assert by_bag == want                       # each kept lookup once, a bag's in index order
    order = [o[3] for o in out]
    if not interleave:
        assert order == [b for b in want for _ in want[b]]
        return
    for bag in want:                            # a bag's lane has its turn every ``lanes`` cycles
        cycles = [o[0] for o in out if o[3] == bag]
        assert all(d >= lanes for d in np.diff(cycles)), (bag, cycles)
    if not always_ready:
        return
    # after the ramp (lanes rounds of a turn a cycle), while enough bags are left: none twice
    # in a window of ``lanes`` lookups, and a lookup every cycle
    for i in (i for i, o in enumerate(out) if o[0] - out[0][0] >= lanes * lanes):
        if len(set(order[i:])) >= lanes:
            assert len(set(order[i:i + lanes])) == lanes, (i, order[i:i + lanes])
            if i + 1 < len(out):
                assert out[i + 1][0] == out[i][0] + 1


@pytest.mark.parametrize("lanes", [1, 4, 16])
def test_replay(lanes):
    rng = np.random.default_rng(lanes)
    parts = []
    for k in range(6):
        bags = make_part(rng, int(rng.integers(1, PARAMS.max_bags + 1)))
        while sum(map(len, bags)) > PARAMS.max_lookups:
            bags.pop()
        kept = len(bags) if k % 3 else int(rng.integers(0, len(bags) + 1))   # a rollback
        parts.append((bags, kept, k % 2 == 0, k >= 2))     # (the last four replayed beside the writes)
    buf = LookupBuffer(PARAMS, lanes=lanes)
    for ready_rate in (1.0, 0.6):
        got = run(buf, parts, seed=lanes, ready_rate=ready_rate)
        for out, (bags, kept, interleave, beside) in zip(got, parts):
            # (beside the writes the lookups come no faster than they are written)
            check(out, bags, kept, lanes, interleave, ready_rate == 1.0 and not beside)


def test_equal_bags_spread_exactly():
    """32 bags of 8: every bag's lookups exactly ``lanes`` cycles apart; lane i starts in
    round i, so neighbouring bags are a lookup apart in depth."""
    rng = np.random.default_rng(1)
    bags = [[(int(rng.integers(0, 1 << 32)), 0) for _ in range(8)] for _ in range(32)]
    (out,) = run(LookupBuffer(PARAMS, lanes=16), [(bags, 32, True, False)], seed=0, ready_rate=1.0)
    check(out, bags, 32, 16, True, True)
    cycles = {}
    for cycle, *_, bag, _, _ in out:
        cycles.setdefault(bag, []).append(cycle)
    assert all(np.all(np.diff(c) == 16) for c in cycles.values())
    assert [cycles[b][0] - out[0][0] for b in range(16)][:8] == [17 * i for i in range(8)]
    # no cycle lost but the ramp's (lanes 1..15 wait 1..15 rounds) and the last bags' drain
    assert out[-1][0] - out[0][0] <= 32 * 8 + 16 * 15 // 2 + 16 * 8


def test_bad_parameters():
    with pytest.raises(ValueError, match="lanes must be a positive integer"):
        LookupBuffer(PARAMS, lanes=0)
    with pytest.raises(TypeError, match="EngineParams"):
        LookupBuffer({"max_bags": 4})
