"""The row updater (E' = fma(-lr, fl(s*g), E), 16 lanes per beat) against the golden FMA, in
Amaranth's simulator, with gaps on both inputs and backpressure on the output."""
import numpy as np
from amaranth.sim import Simulator

from refree.golden.arith import canonical_nan, fma
from refree.hw.engine.updater import RowUpdater


def beats(a):
    return [int.from_bytes(row.astype("<f4").tobytes(), "little") for row in a]


def test_updates_match_the_golden_fma_under_backpressure():
    rng = np.random.default_rng(0)
    n = 40
    g = rng.standard_normal((n, 16)).astype(np.float32)
    e = rng.standard_normal((n, 16)).astype(np.float32)
    g[0] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, 0, 0, 0, 0, 1, 1, 1, 1]
    e[0] = [-0.0, -0.0, 1, np.inf, 0, 0, -0.0, 3.4e38, np.nan, 1e-38, -1e-38, 0, 0, 0, 0, 0]
    lr = np.float32(0.37)
    s = rng.choice(np.float32([1.0, 0.5, 1 / 3, 0.1]), n).astype(np.float32)
    s[0] = 1.0
    want = canonical_nan(fma(-lr, (s[:, None] * g).astype(np.float32), e))
    dut = RowUpdater()
    got = []

    async def feed(ctx, stream, data, gap):
        for k, v in enumerate(data):
            if k % gap == 0:
                await ctx.tick()
            if stream is dut.g:
                ctx.set(stream.payload.data, v)
                ctx.set(stream.payload.scale, int(s[k].view(np.uint32)))
            else:
                ctx.set(stream.payload, v)
            ctx.set(stream.valid, 1)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    async def bench_g(ctx):
        ctx.set(dut.lr, int(lr.view(np.uint32)))
        await feed(ctx, dut.g, beats(g), 3)

    async def bench_e(ctx):
        await feed(ctx, dut.e, beats(e), 5)

    async def bench_out(ctx):
        cycle = 0
        while len(got) < n:
            take = cycle % 4 != 0
            ctx.set(dut.out.ready, take)
            await ctx.tick()
            cycle += 1
            assert cycle < 2000
        ctx.set(dut.out.ready, 0)

    async def collect(ctx):
        async for clk, _, valid, ready, payload in ctx.tick().sample(dut.out.valid, dut.out.ready,
                                                                     dut.out.payload):
            if valid and ready:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench_g)
    sim.add_testbench(bench_e)
    sim.add_testbench(bench_out)
    sim.add_process(collect)
    sim.run_until(1e-8 * 3000)
    out = np.array([np.frombuffer(v.to_bytes(64, "little"), "<f4") for v in got[:n]])
    assert len(got) == n
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
