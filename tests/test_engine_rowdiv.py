"""The row divider (mean pooling's division) against numpy's correctly rounded binary32
division, in Amaranth's simulator: beats passed through and divided, in order, under
input gaps and output backpressure."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.arith import canonical_nan
from refree.hw.engine.rowdiv import RowDivider


@pytest.mark.parametrize("lanes", [4, 16])
def test_divides_or_passes_each_beat_in_order(lanes):
    rng = np.random.default_rng(lanes)
    n = 24
    x = (rng.standard_normal((n, 16)) * 10.0 ** rng.integers(-40, 38, (n, 16))).astype(np.float32)
    x[0] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, 1, 2, 3, 7, 1e-40, 5, 6, 9]
    div = rng.integers(1, 65, n).astype(np.float32)
    divide = rng.random(n) < 0.7
    want = canonical_nan(np.where(divide[:, None], x / div[:, None], x).astype(np.float32))
    want[~divide] = x[~divide]                      # passed beats keep every bit
    dut = RowDivider(lanes=lanes, tag_bits=8)
    got = []

    async def feed(ctx):
        for k in range(n):
            if k % 3 == 0:
                await ctx.tick()
            ctx.set(dut.i.payload.data, int.from_bytes(x[k].astype("<f4").tobytes(), "little"))
            ctx.set(dut.i.payload.divisor, int(div[k].view(np.uint32)))
            ctx.set(dut.i.payload.divide, int(divide[k]))
            ctx.set(dut.i.payload.tag, k)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def drain(ctx):
        cycle = 0
        while len(got) < n:
            take = cycle % 5 != 0
            ctx.set(dut.o.ready, take)
            if take and ctx.get(dut.o.valid):
                got.append((ctx.get(dut.o.payload.tag), ctx.get(dut.o.payload.data)))
            await ctx.tick()
            cycle += 1
            assert cycle < 5000

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    assert [t for t, _ in got] == list(range(n))
    out = np.array([np.frombuffer(v.to_bytes(64, "little"), "<f4") for _, v in got])
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
