"""The result splitter in Amaranth's simulator: random wide beats with random gaps and
backpressure come out as memory beats, lowest lanes first, in order, one a cycle when
nothing waits."""
import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.sim import Simulator

from refree.hw.engine.result_splitter import ResultSplitter


def wide_layout(lanes, beats):
    return data.StructLayout({"member": 5, "beat": max(1, (beats - 1).bit_length()),
                              "data": 32 * lanes, "last": 1})


@pytest.mark.parametrize("lanes, beats, gap, stall", [(32, 2, 0.3, 0.3), (48, 1, 0.2, 0.4),
                                                      (16, 4, 0.0, 0.0), (32, 2, 0.0, 0.0)])
def test_wide_beats_become_memory_beats_in_order(lanes, beats, gap, stall):
    rng = np.random.default_rng(lanes + beats)
    dut = ResultSplitter(wide_layout(lanes, beats), beats)
    parts = lanes // 16
    assert dut.parts == parts and Shape.cast(dut.Result["beat"].shape).width >= (beats * parts - 1).bit_length()
    members = rng.integers(0, 32, 12).tolist()
    words = {(m_, j): int.from_bytes(rng.bytes(4 * lanes), "little") for m_ in set(members) for j in range(beats)}
    want = [(m_, j * parts + p, (words[m_, j] >> (512 * p)) & ((1 << 512) - 1), int(j == beats - 1 and p == parts - 1))
            for m_ in members for j in range(beats) for p in range(parts)]
    got, cycles = [], []

    async def send(ctx):
        for m_ in members:
            for j in range(beats):
                while gap and rng.random() < gap:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"member": m_, "beat": j, "data": words[m_, j], "last": int(j == beats - 1)})
                await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def take(ctx):
        cycle = 0
        while len(got) < len(want):
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            assert cycle < 2000
            if valid and ready:
                got.append((p.member, p.beat, p.data, p.last))
                cycles.append(cycle)
        ctx.set(dut.o.ready, 0)
        await ctx.tick()
        assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(send)
    sim.add_testbench(take)
    sim.run()
    assert got == want
    if not gap and not stall:                   # one memory beat a cycle, after one of latency
        assert cycles == list(range(cycles[0], cycles[0] + len(want)))
