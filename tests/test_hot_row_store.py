"""The hot-row store (FAE's hot rows in the buffer chip) in Amaranth's simulator, between a
random command stream standing for the engine and a DRAM stand-in that answers in order
after random delays, under random backpressure on every stream.

Every read must return what a flat memory holding every command in port order returns;
while beats are held no command of theirs may reach DRAM; a flush must write back exactly
the beats written since the load, with their last values, after which DRAM equals the flat
memory.  A failed load (a duplicate beat, a full set, a store not empty) must leave the
store as it was.  The host's placement rule (``placement``) must predict the hardware's."""
import random

import pytest
from amaranth.sim import Simulator

from refree.hw.lrdimm.hot_row_store import HotRowStore, LoadError, placement, set_index

ADDR_BITS, BEATS, WAYS = 8, 16, 4


def initial(a):
    return (a * 0x9E3779B1 + 7) & ((1 << 512) - 1) | (a << 500)


class Bench:
    """Drives the store a cycle at a time; ``run`` executes a script of phases."""

    def __init__(self, dut, seed):
        self.dut, self.rng = dut, random.Random(seed)
        self.dram = {}                      # DRAM stand-in (absent: initial(a))
        self.flat = {}                      # the flat memory: every engine command in port order
        self.down_log = []                  # (addr, write) of every command that reached DRAM
        self.pending_rsp = []               # (cycle it may leave, value), DRAM's reads in order
        self.expect = []                    # the engine's reads' values, in port order
        self.got = []
        self.cycle = 0

    def value(self, mem, a):
        return mem.get(a, initial(a))

    async def tick(self, ctx, cmds, loads):
        """One cycle: the engine offers cmds[0], the load stream loads[0]; DRAM answers."""
        d, rng = self.dut, self.rng
        self.cycle += 1
        assert self.cycle < 200_000, "stalled"
        offer = bool(cmds) and rng.random() < 0.8
        ctx.set(d.up.cmd.valid, offer)
        if offer:
            a, w, v = cmds[0]
            ctx.set(d.up.cmd.payload, {"addr": a, "write": w, "data": v})
        ctx.set(d.load.valid, bool(loads))
        if loads:
            ctx.set(d.load.payload, {"addr": loads[0][0], "last": loads[0][1]})
        ctx.set(d.up.rsp.ready, rng.random() < 0.7)
        ctx.set(d.down.cmd.ready, rng.random() < 0.6)
        back = bool(self.pending_rsp) and self.pending_rsp[0][0] <= self.cycle
        ctx.set(d.down.rsp.valid, back)
        ctx.set(d.down.rsp.payload, self.pending_rsp[0][1] if back else 0)
        if offer and ctx.get(d.up.cmd.ready):
            a, w, v = cmds.pop(0)
            if w:
                self.flat[a] = v
            else:
                self.expect.append(self.value(self.flat, a))
        if loads and ctx.get(d.load.ready):
            loads.pop(0)
        if ctx.get(d.up.rsp.valid) and ctx.get(d.up.rsp.ready):
            self.got.append(ctx.get(d.up.rsp.payload))
        if back and ctx.get(d.down.rsp.ready):
            self.pending_rsp.pop(0)
        if ctx.get(d.down.cmd.valid) and ctx.get(d.down.cmd.ready):
            a, w, v = (ctx.get(d.down.cmd.payload.addr), ctx.get(d.down.cmd.payload.write),
                       ctx.get(d.down.cmd.payload.data))
            self.down_log.append((a, w))
            if w:
                self.dram[a] = v
            else:
                at = max([self.cycle + rng.randint(2, 12)] + [c for c, _ in self.pending_rsp[-1:]])
                self.pending_rsp.append((at, self.value(self.dram, a)))
        await ctx.tick()

    async def until_idle(self, ctx, cmds=(), loads=(), flush=False):
        cmds, loads = list(cmds), list(loads)
        if flush:
            ctx.set(self.dut.flush, 1)
            await self.tick(ctx, cmds, loads)
            ctx.set(self.dut.flush, 0)
        while cmds or loads or ctx.get(self.dut.busy) or self.pending_rsp:
            await self.tick(ctx, cmds, loads)
        for _ in range(3):
            await self.tick(ctx, cmds, loads)
        assert not ctx.get(self.dut.busy)

    def run(self, script):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)

        async def bench(ctx):
            await self.until_idle(ctx)              # the clear after reset
            await script(self, ctx)
        sim.add_testbench(bench)
        sim.run()


def load_of(addrs):
    return [(a, i == len(addrs) - 1) for i, a in enumerate(addrs)]


def traffic(rng, n, hot):
    """n engine commands, half of them to the hot beats, half writes."""
    cold = [a for a in range(64) if a not in hot]
    return [(rng.choice(sorted(hot) if rng.random() < 0.5 else cold), rng.random() < 0.5,
             rng.getrandbits(512)) for _ in range(n)]


def fitting_hot_set(rng, n):
    while True:
        addrs = rng.sample(range(64), n)
        if isinstance(placement(addrs, ADDR_BITS, BEATS, WAYS), list):
            return addrs


@pytest.mark.parametrize("seed", [1, 2])
def test_hot_beats_served_on_chip_and_flushed_back(seed):
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, seed)
    hot = fitting_hot_set(b.rng, 12)
    cmds = traffic(b.rng, 600, set(hot))

    async def script(b, ctx):
        await b.until_idle(ctx, loads=load_of(hot))
        assert ctx.get(dut.error) == LoadError.NONE and ctx.get(dut.held) == len(hot)
        assert b.down_log == [(a, 0) for a in hot]              # each hot beat read once, in order
        b.down_log.clear()
        await b.until_idle(ctx, cmds=cmds)
        assert b.got == b.expect
        assert not {a for a, _ in b.down_log} & set(hot)        # no hot beat reached DRAM
        hot_cmds = [(a, w) for a, w, _ in cmds if a in hot]
        c = ctx.get(dut.counters)
        assert (c.read_hits, c.write_hits) == (sum(not w for _, w in hot_cmds), sum(w for _, w in hot_cmds))
        assert len(b.down_log) == len(cmds) - len(hot_cmds)
        b.down_log.clear()
        await b.until_idle(ctx, flush=True)
        written = {a for a, w in hot_cmds if w}
        assert sorted(b.down_log) == sorted((a, 1) for a in written)   # the dirty beats, once each
        assert ctx.get(dut.held) == 0 and ctx.get(dut.counters.written_back) == len(written)
        for a in range(64):
            assert b.value(b.dram, a) == b.value(b.flat, a), f"beat {a} after the flush"
        b.down_log.clear()
        await b.until_idle(ctx, cmds=traffic(b.rng, 50, set(hot)))     # empty: everything to DRAM
        assert len(b.down_log) == 50 and b.got == b.expect
    b.run(script)


def colliding(n, avoid=()):
    """n beat addresses of one set."""
    s = set_index(5, ADDR_BITS, 2)
    return [a for a in range(256) if set_index(a, ADDR_BITS, 2) == s and a not in avoid][:n]


@pytest.mark.parametrize("case", ["duplicate", "set_full"])
def test_a_failed_load_leaves_the_store_empty(case):
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 3)
    addrs = [3, 9, 40, 9, 17] if case == "duplicate" else [1, 2] + colliding(WAYS + 1)
    want = placement(addrs, ADDR_BITS, BEATS, WAYS)
    assert want == ((LoadError.DUPLICATE, 3) if case == "duplicate" else (LoadError.SET_FULL, 2 + WAYS))

    async def script(b, ctx):
        await b.until_idle(ctx, loads=load_of(addrs))
        assert ctx.get(dut.error) == want[0] and ctx.get(dut.held) == 0
        b.down_log.clear()
        cmds = traffic(b.rng, 80, set(addrs))
        await b.until_idle(ctx, cmds=cmds)          # nothing held: every command to DRAM
        assert b.got == b.expect and len(b.down_log) == len(cmds)
        await b.until_idle(ctx, loads=load_of([3, 9]))   # and a good load takes again
        assert ctx.get(dut.error) == LoadError.NONE and ctx.get(dut.held) == 2
    b.run(script)


def test_a_load_into_a_store_that_holds_beats_changes_nothing():
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 4)
    hot = [4, 8, 15, 16]

    async def script(b, ctx):
        await b.until_idle(ctx, loads=load_of(hot))
        await b.until_idle(ctx, cmds=[(4, 1, 111), (8, 1, 222)])
        b.down_log.clear()
        await b.until_idle(ctx, loads=load_of([20, 21, 22]))
        assert ctx.get(dut.error) == LoadError.NOT_EMPTY and ctx.get(dut.held) == len(hot)
        assert b.down_log == []                     # nothing read
        await b.until_idle(ctx, cmds=[(4, 0, 0), (20, 0, 0), (8, 0, 0)])
        assert b.got == b.expect == [111, initial(20), 222]
        assert b.down_log == [(20, 0)]              # the held beats still served on chip
        b.down_log.clear()
        await b.until_idle(ctx, flush=True)
        assert sorted(b.down_log) == [(4, 1), (8, 1)] and b.dram[4] == 111 and b.dram[8] == 222
    b.run(script)


def test_parameters_are_checked():
    for kw in (dict(beats=12), dict(ways=3), dict(ways=32, beats=64), dict(reads_in_flight=1), dict(beats=4, ways=8)):
        with pytest.raises(ValueError, match="HotRowStore"):
            HotRowStore(ADDR_BITS, **{"beats": 16, "ways": 4, **kw})
