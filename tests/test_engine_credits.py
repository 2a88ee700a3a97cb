"""The credited pipelines (hw/engine/credits.py): each unit behind an output queue takes an
entry every cycle while its consumer keeps up (a place too few costs a bubble every
latency + 3 cycles, which paced the fold's members and backward's updates), and loses,
repeats or reorders nothing when its consumer stalls."""
import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from refree.hw.engine.coef import CoefStage
from refree.hw.engine.row_store import RowStore
from refree.hw.engine.rowdiv import RowDivider
from refree.hw.engine.updater import RowUpdater

ONE = 0x3F800000


class Unit:
    """A unit, its input stream ``i`` (``put(ctx, k)`` sets the k-th entry's payload), its
    output stream ``o`` (``tag(ctx)`` reads back the k of the entry there) and a
    ``setup(ctx)`` coroutine run first."""

    def __init__(self, dut, i, o, put, tag, setup=None, inputs=()):
        self.dut, self.i, self.o, self.put, self.tag = dut, i, o, put, tag
        self.setup, self.inputs = setup, inputs     # (other input streams held valid)


def updater():
    u = RowUpdater()        # lr = 0: out = fma(-0, g, e) = e, e's lane 0 the entry's number

    def put(ctx, k):
        ctx.set(u.e.payload, ONE + k)
    return Unit(u, u.e, u.out, put, lambda ctx: (ctx.get(u.out.payload) & 0xFFFFFFFF) - ONE, inputs=[u.g])


def coef():
    c = CoefStage(data.StructLayout({"x": 16}))
    return Unit(c, c.i, c.o, lambda ctx, k: ctx.set(c.i.payload.payload.x, k),
                lambda ctx: ctx.get(c.o.payload.payload.x))


def divider():
    d = RowDivider(16, tag_bits=16)        # beats without ``divide`` pass unchanged, in order
    return Unit(d, d.i, d.o, lambda ctx, k: ctx.set(d.i.payload.tag, k), lambda ctx: ctx.get(d.o.payload.tag))


def store(by_slot):
    s = RowStore(64, 4, 20, parts=4)

    async def setup(ctx):
        ctx.set(s.by_slot, by_slot)
        ctx.set(s.start, 1)
        await ctx.tick()
        ctx.set(s.start, 0)
        if by_slot:             # every beat of the 64 slots arrives: beat j holds j
            ctx.set(s.rows.valid, 1)
            for j in range(256):
                ctx.set(s.rows.payload, j)
                await ctx.tick()
            ctx.set(s.rows.valid, 0)
    if by_slot:                 # the k-th ask: beat k mod 256
        put = lambda ctx, k: ctx.set(s.wanted.payload, {"slot": (k % 256) // 4, "beat": k % 4})
        return Unit(s, s.wanted, s.out, put, lambda ctx: ctx.get(s.out.payload.beat_data) & 0xFFFF, setup)
    return Unit(s, s.rows, s.out, lambda ctx, k: ctx.set(s.rows.payload, k),
                lambda ctx: ctx.get(s.out.payload.beat_data) & 0xFFFF, setup)


UNITS = {"updater": updater, "coef": coef, "divider": divider,
         "store by slot": lambda: store(1), "store in order": lambda: store(0)}


def run(unit, cycles, ready_p, seed=0, settle=100, wrap=1 << 16):
    """Offer entries 0, 1, ... every cycle for ``settle + cycles`` cycles, ``o`` ready with
    probability ``ready_p``; then drain.  Returns the results per cycle after ``settle``
    and the tags that came out (all of them, in order)."""
    rng = np.random.default_rng(seed)
    out, during = [], 0

    async def bench(ctx):
        nonlocal during
        if unit.setup:
            await unit.setup(ctx)
        for s in unit.inputs:
            ctx.set(s.valid, 1)
        k = 0
        for cycle in range(settle + cycles + 400):     # (the store holds up to 256)
            feeding = cycle < settle + cycles
            unit.put(ctx, k % wrap)
            ctx.set(unit.i.valid, feeding)
            ready = rng.random() < ready_p if feeding else True
            ctx.set(unit.o.ready, ready)
            await ctx.delay(1e-9)
            if feeding and ctx.get(unit.i.ready):
                k += 1
            if ready and ctx.get(unit.o.valid):
                out.append(unit.tag(ctx))
                during += settle <= cycle < settle + cycles
            await ctx.tick()
        assert len(out) == k, f"{k} entries in, {len(out)} out"

    sim = Simulator(unit.dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return during / cycles, out


@pytest.mark.parametrize("name", UNITS)
def test_a_result_every_cycle(name):
    rate, out = run(UNITS[name](), 300, 1.0)
    assert rate == 1.0
    assert out == [k % 256 if name == "store by slot" else k for k in range(len(out))]


@pytest.mark.parametrize("name", UNITS)
def test_a_slow_consumer_sets_the_pace_and_nothing_is_lost(name):
    """Ready half the cycles: a result half the cycles, every entry once, in order."""
    rate, out = run(UNITS[name](), 1000, 0.5, seed=1)
    assert 0.45 < rate <= 0.55
    assert out == [k % 256 if name == "store by slot" else k for k in range(len(out))]
