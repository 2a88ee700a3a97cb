"""The beat packer: memory beats in, wide beats of 1, 2 and 4 memory beats out, the first
in the lowest bits, with random gaps on the input and backpressure on the output."""
import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from refree.hw.engine.beat_packer import BeatPacker


def run(parts, beats, seed, gap=0.3, stall=0.4):
    rng = np.random.default_rng(seed)
    dut = BeatPacker(parts)
    got, cycles = [], []

    async def bench(ctx):
        k = 0
        for cycle in range(10 * len(beats) + 20):
            if len(got) == len(beats) // parts:
                break
            ctx.set(dut.i.valid, k < len(beats) and rng.random() >= gap)
            ctx.set(dut.i.payload, beats[k] if k < len(beats) else 0)
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                k += 1
            if ready and ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
                cycles.append(cycle)
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        assert not ctx.get(dut.busy)

    top = Module()                      # (a clock domain even when the packer is a wire)
    top.submodules.dut, tick = dut, Signal()
    top.d.sync += tick.eq(~tick)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_words_in_order(parts):
    rng = np.random.default_rng(parts)
    beats = [int(x) for x in rng.integers(0, 1 << 62, 12 * parts, dtype=np.int64)]
    beats = [b << 448 | b for b in beats]                   # both ends of a memory beat
    got, _ = run(parts, beats, parts)
    want = [sum(b << (512 * j) for j, b in enumerate(beats[k:k + parts]))
            for k in range(0, len(beats), parts)]
    assert got == want


def test_a_beat_a_cycle_without_gaps():
    """4 parts: a wide beat every 4 cycles, without a gap between them."""
    got, cycles = run(4, list(range(1, 33)), 0, gap=0, stall=0)
    assert len(got) == 8 and np.diff(cycles).tolist() == [4] * 7


@pytest.mark.parametrize("parts", [0, -1, True, 1.0])
def test_parts_are_checked(parts):
    with pytest.raises(ValueError, match=r"^BeatPacker parts must be a positive integer"):
        BeatPacker(parts)
