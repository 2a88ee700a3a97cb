"""The credited pipelines (hw/engine/credits.py): each unit behind an output queue takes an
entry every cycle while its consumer keeps up (a place too few costs a bubble every
latency + 3 cycles, which paced the fold's members and backward's updates), and loses
nothing when its consumer stalls."""
import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from refree.hw.engine.coef import CoefStage
from refree.hw.engine.row_store import RowStore
from refree.hw.engine.rowdiv import RowDivider
from refree.hw.engine.updater import RowUpdater


def outputs_per_cycle(unit, out, feed, cycles=300, settle=100, ready_p=1.0, seed=0):
    """Results per cycle at ``out`` after ``settle`` cycles, the inputs always offered
    (``feed(ctx)`` once) and ``out`` ready with probability ``ready_p``."""
    rng = np.random.default_rng(seed)
    got = []

    async def bench(ctx):
        await feed(ctx)
        for _ in range(settle + cycles):
            ready = rng.random() < ready_p
            ctx.set(out.ready, ready)
            await ctx.delay(1e-9)
            got.append(ready and ctx.get(out.valid))
            await ctx.tick()

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return sum(got[settle:]) / cycles


def updater():
    u = RowUpdater()

    async def feed(ctx):
        ctx.set(u.g.valid, 1)
        ctx.set(u.e.valid, 1)
    return u, u.out, feed


def coef():
    c = CoefStage(data.StructLayout({"x": 8}))

    async def feed(ctx):
        ctx.set(c.i.valid, 1)
    return c, c.o, feed


def divider():
    d = RowDivider(16)

    async def feed(ctx):
        ctx.set(d.i.valid, 1)
    return d, d.o, feed


def store(by_slot):
    s = RowStore(64, 4, 20, parts=4)

    async def feed(ctx):
        ctx.set(s.by_slot, by_slot)
        ctx.set(s.start, 1)
        await ctx.tick()
        ctx.set(s.start, 0)
        ctx.set(s.rows.valid, 1)
        if by_slot:             # every beat arrived, then the same beat asked again and again
            for _ in range(4):
                await ctx.tick()
            ctx.set(s.rows.valid, 0)
            ctx.set(s.wanted.valid, 1)
    return s, s.out, feed


UNITS = {"updater": updater, "coef": coef, "divider": divider,
         "store by slot": lambda: store(1), "store in order": lambda: store(0)}


@pytest.mark.parametrize("name", UNITS)
def test_a_result_every_cycle(name):
    assert outputs_per_cycle(*UNITS[name]()) == 1.0


@pytest.mark.parametrize("name", UNITS)
def test_a_slow_consumer_sets_the_pace(name):
    """Half the cycles ready: half the cycles a result (nothing lost, nothing stuck)."""
    rate = outputs_per_cycle(*UNITS[name](), cycles=2000, ready_p=0.5, seed=1)
    assert 0.45 < rate <= 0.55
