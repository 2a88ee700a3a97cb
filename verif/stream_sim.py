"""Drive a stream component in Amaranth's own simulator (async testbenches).

:func:`run_stream` pushes packed payload words into ``dut.i`` and collects ``dut.o``
payloads, optionally with random backpressure on both sides (``i.valid`` withheld,
``o.ready`` dropped), and reports the cycle count and the latency of the first result.
``reset_at`` pulses the synchronous reset (through a ``ResetInserter``) once a given number
of words went in, to check that reset empties the pipeline. It is the fast,
dependency-free counterpart of the cocotb harness (:mod:`.stream_harness`) for unit tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from amaranth.hdl import Module, ResetInserter, Signal, Value
from amaranth.sim import Simulator

__all__ = ["run_stream", "StreamRun"]


@dataclass
class StreamRun:
    outputs: list = field(default_factory=list)
    cycles: int = 0
    first_latency: int | None = None


def run_stream(dut, words, *, stall: float = 0.0, seed: int = 0, n_out: int | None = None,
               reset_at: int | None = None, max_cycles: int | None = None) -> StreamRun:
    """Simulate ``dut`` on ``words`` (packed ``i.payload`` integers).

    Parameters
    ----------
    stall : float
        Probability per cycle that the source withholds ``valid`` and, independently, that
        the sink drops ``ready``.
    n_out : int
        Results to wait for (default: one per word).
    reset_at : int
        Assert reset for one cycle right after this many words were accepted.
    max_cycles : int
        Stop waiting after this many cycles (returns what arrived).
    """
    words = [int(w) for w in words]
    n_out = len(words) if n_out is None else n_out
    rng_in = random.Random(seed)
    rng_out = random.Random(seed + 1)
    run = StreamRun()
    rst = Signal()
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut)
    tick = Signal()                      # keeps a sync domain even for latency-0 units
    top.d.sync += tick.eq(~tick)
    limit = max_cycles or (len(words) + n_out + 200) * (8 if stall else 2) + 1000
    first_in = []

    async def source(ctx):
        payload = Value.cast(dut.i.payload)
        k = cycle = 0
        while k < len(words):
            if stall and rng_in.random() < stall:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
                cycle += 1
                continue
            ctx.set(dut.i.valid, 1)
            ctx.set(payload, words[k])
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            cycle += 1
            if ready:
                if not first_in:
                    first_in.append(cycle)
                k += 1
                if reset_at is not None and k == reset_at:
                    ctx.set(dut.i.valid, 0)
                    ctx.set(rst, 1)
                    await ctx.tick()
                    cycle += 1
                    ctx.set(rst, 0)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        payload = Value.cast(dut.o.payload)
        cycle = 0
        while len(run.outputs) < n_out and cycle < limit:
            ready = 0 if (stall and rng_out.random() < stall) else 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, value = await ctx.tick().sample(dut.o.valid, payload)
            cycle += 1
            if valid and ready:
                if run.first_latency is None and first_in:
                    run.first_latency = cycle - first_in[0]
                run.outputs.append(int(value))
        run.cycles = cycle

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return run
