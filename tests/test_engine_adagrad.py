"""The engine's row-wise Adagrad unit (16-lane beats through a P-lane vector unit, the state
beat read-modify-written) against the golden model's Adagrad, in Amaranth's simulator, with
gaps on the inputs and backpressure on the output."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.arith import canonical_nan
from refree.golden.model import _adagrad
from refree.hw.engine.adagrad import AdagradUnit


def beats(a):
    """float32 rows (n, 16k) -> per row, its k beats as ints."""
    return [[int.from_bytes(b.astype("<f4").tobytes(), "little") for b in row.reshape(-1, 16)] for row in a]


def unbeat(v):
    return np.frombuffer(v.to_bytes(64, "little"), "<f4")


@pytest.mark.parametrize("dim,lanes", [(16, 4), (32, 16)])
def test_rows_and_state_beats_match_the_golden_adagrad(dim, lanes):
    rng = np.random.default_rng(dim)
    n = 5
    rows = np.array([3, 17, 18, 40, 5])                 # two share a state beat (16, 17)
    g = rng.standard_normal((n, dim)).astype(np.float32)
    e = rng.standard_normal((n, dim)).astype(np.float32)
    g[1, :3] = [0.0, -0.0, 1e-42]
    g[3] = 0                                            # state unchanged, m = lr / (sqrt + eps)
    state = np.abs(rng.standard_normal(48)).astype(np.float32)
    state[5] = 0
    lr, eps = np.float32(0.05), np.float32(1e-8)
    want_e, want_s = e.copy(), state.copy()
    for i, r in enumerate(rows):                        # one row at a time, as the engine does
        E, st = want_e[i:i + 1], want_s[r:r + 1]
        _adagrad(E, st, np.array([0]), g[i:i + 1], lr, eps)
        want_e[i], want_s[r] = E[0], st[0]
    dut = AdagradUnit(dim, lanes)
    out = []

    async def feed(ctx, stream, items, gap, setter):
        for k, v in enumerate(items):
            if k % gap == 0:
                await ctx.tick()
            setter(ctx, v)
            ctx.set(stream.valid, 1)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    def state_beat(r, s):
        return int.from_bytes(s[16 * (r // 16):16 * (r // 16) + 16].astype("<f4").tobytes(), "little")

    async def bench_g(ctx):
        ctx.set(dut.lr, int(lr.view(np.uint32)))
        ctx.set(dut.eps, int(eps.view(np.uint32)))
        await feed(ctx, dut.g, [b for row in beats(g) for b in row], 3, lambda c, v: c.set(dut.g.payload, v))

    async def bench_e(ctx):
        await feed(ctx, dut.e, [b for row in beats(e) for b in row], 2, lambda c, v: c.set(dut.e.payload, v))

    async def bench_state(ctx):
        # the engine reads a state beat after the previous update of that beat is written
        s = state.copy()
        for i, r in enumerate(rows):
            while len([o for o in out if o[1]]) < i and any(rows[:i] // 16 == r // 16):
                await ctx.tick()
            same = [x for x in range(i) if rows[x] // 16 == r // 16]
            if same:                # the beat as the last update of it wrote it
                s[16 * (r // 16):16 * (r // 16) + 16] = unbeat([o for o in out if o[1]][same[-1]][0])
            def set_state(c, v, r=r, s=s):
                c.set(dut.state.payload.beat, state_beat(r, s))
                c.set(dut.state.payload.lane, int(r % 16))
            await feed(ctx, dut.state, [0], 1, set_state)

    async def collect(ctx):
        cycle = 0
        while len(out) < n * (dim // 16 + 1):
            ctx.set(dut.out.ready, cycle % 3 != 0)
            await ctx.tick()
            cycle += 1
            assert cycle < 20000, "the Adagrad unit stopped"

    async def sample(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.out.valid, dut.out.ready, dut.out.payload):
            if valid and ready:
                out.append((payload.data, payload.state, payload.last))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in (bench_g, bench_e, bench_state, collect):
        sim.add_testbench(bench)
    sim.add_process(sample)
    sim.run()
    per_row = dim // 16 + 1
    for i, r in enumerate(rows):
        mine = out[i * per_row:(i + 1) * per_row]
        assert [(s, l) for _, s, l in mine] == [(0, 0)] * (per_row - 1) + [(1, 1)]
        got_e = np.concatenate([unbeat(d) for d, _, _ in mine[:-1]])
        assert np.array_equal(got_e.view(np.uint32), canonical_nan(want_e[i]).view(np.uint32))
        got_s = unbeat(mine[-1][0])
        # the other lanes of the state beat: as read (states of rows updated before in it)
        lo = 16 * (r // 16)
        done = {rr for rr in rows[:i + 1]}
        expect = np.array([want_s[x] if x in done else state[x] for x in range(lo, lo + 16)], np.float32)
        assert np.array_equal(got_s.view(np.uint32), canonical_nan(expect).view(np.uint32)), f"row {r}"
