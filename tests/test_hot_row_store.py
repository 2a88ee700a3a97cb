# amaranth: UnusedElaboratable=no
"""The hot-row store (FAE's hot rows in the buffer chip) in Amaranth's simulator, between a
random command stream standing for the engine and a DRAM stand-in that answers in order
after random delays, under random backpressure on every stream.

Every read must return what a flat memory holding every command in port order returns;
while beats are held no command of theirs may reach DRAM; a flush must write back exactly
the beats written since the load, with their last values, after which DRAM equals the flat
memory.  A load reads its list from DRAM; a failed load (a duplicate beat, a full set, a
store not empty, more beats than it holds) must leave the store as it was.  The host's
placement rule (``placement``) must predict the hardware's errors."""
import random

import numpy as np

import pytest
from amaranth.sim import Simulator

from refree.golden.errors import ErrorCode
from refree.hw.lrdimm.hot_row_store import LIST_WORDS, HotRowStore, HotStoreParams, placement, set_index

ADDR_BITS, BEATS, WAYS = 8, 32, 4
SET_BITS = (BEATS // WAYS).bit_length() - 1
LIST_ADDR = 200             # the hot list's beats (the traffic stays below 64)


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

    async def tick(self, ctx, cmds, strobe=None):
        """One cycle: the engine offers cmds[0], ``strobe`` (load or flush) is high; DRAM
        answers."""
        d, rng = self.dut, self.rng
        self.cycle += 1
        assert self.cycle < 20_000, "stalled"
        ctx.set(d.load, strobe is d.load)
        ctx.set(d.flush, strobe is d.flush)
        offer = bool(cmds) and rng.random() < 0.8
        ctx.set(d.up.cmd.valid, offer)
        if offer:
            a, w, v = cmds[0]
            ctx.set(d.up.cmd.payload, {"addr": a, "write": w, "data": v})
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

    async def until_idle(self, ctx, cmds=(), load=None, flush=False):
        """Run ``cmds``, or a load of the beat addresses ``load`` (its list written to DRAM
        first), or a flush, until the store is idle."""
        cmds = list(cmds)
        if load is not None:
            for k in range(0, len(load), LIST_WORDS):
                self.dram[LIST_ADDR + k // LIST_WORDS] = sum(a << (32 * i) for i, a in enumerate(load[k:k + 16]))
            ctx.set(self.dut.list_addr, LIST_ADDR)
            ctx.set(self.dut.count, len(load))
        strobe = self.dut.load if load is not None else self.dut.flush if flush else None
        await self.tick(ctx, cmds, strobe)
        while cmds or ctx.get(self.dut.busy) or self.pending_rsp:
            await self.tick(ctx, cmds)
        for _ in range(3):
            await self.tick(ctx, cmds)
        assert not ctx.get(self.dut.busy)

    def table_log(self):
        """The commands that reached DRAM, but the hot list's reads."""
        return [(a, w) for a, w in self.down_log if a < LIST_ADDR]

    def run(self, script):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)

        async def bench(ctx):
            await self.until_idle(ctx)              # the clear after reset
            await script(self, ctx)
        sim.add_testbench(bench)
        sim.run()


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
    hot = fitting_hot_set(b.rng, 20)          # (two beats of list)
    cmds = traffic(b.rng, 600, set(hot))

    async def script(b, ctx):
        await b.until_idle(ctx, load=hot)
        assert ctx.get(dut.error) == ErrorCode.OK and ctx.get(dut.held) == len(hot)
        assert b.table_log() == [(a, 0) for a in hot]              # each hot beat read once, in order
        assert [a for a, _ in b.down_log if a >= LIST_ADDR] == [LIST_ADDR, LIST_ADDR + 1]
        b.down_log.clear()
        await b.until_idle(ctx, cmds=cmds)
        assert b.got == b.expect
        assert not {a for a, _ in b.table_log()} & set(hot)        # no hot beat reached DRAM
        hot_cmds = [(a, w) for a, w, _ in cmds if a in hot]
        c = ctx.get(dut.counters)
        assert (c.read_hits, c.write_hits) == (sum(not w for _, w in hot_cmds), sum(w for _, w in hot_cmds))
        assert len(b.table_log()) == len(cmds) - len(hot_cmds)
        b.down_log.clear()
        await b.until_idle(ctx, flush=True)
        written = {a for a, w in hot_cmds if w}
        assert sorted(b.table_log()) == sorted((a, 1) for a in written)   # the dirty beats, once each
        assert ctx.get(dut.held) == 0 and ctx.get(dut.counters.written_back) == len(written)
        for a in range(64):
            assert b.value(b.dram, a) == b.value(b.flat, a), f"beat {a} after the flush"
        b.down_log.clear()
        await b.until_idle(ctx, cmds=traffic(b.rng, 50, set(hot)))     # empty: everything to DRAM
        assert len(b.table_log()) == 50 and b.got == b.expect
    b.run(script)


def colliding(n, avoid=()):
    """n beat addresses of one set."""
    s = set_index(5, ADDR_BITS, SET_BITS)
    return [a for a in range(256) if set_index(a, ADDR_BITS, SET_BITS) == s and a not in avoid][:n]


@pytest.mark.parametrize("case", ["duplicate", "set_full", "too_many"])
def test_a_failed_load_leaves_the_store_empty(case):
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 3)
    addrs = {"duplicate": [3, 9, 40, 9, 17], "set_full": [1, 2] + colliding(WAYS + 1),
             "too_many": list(range(BEATS + 1))}[case]
    want = placement(addrs, ADDR_BITS, BEATS, WAYS)
    assert want == {"duplicate": (ErrorCode.HOT_DUPLICATE, 3), "set_full": (ErrorCode.HOT_SET_FULL, 2 + WAYS),
                    "too_many": (ErrorCode.HOT_TOO_MANY, BEATS)}[case]

    async def script(b, ctx):
        await b.until_idle(ctx, load=addrs)
        assert ctx.get(dut.error) == want[0] and ctx.get(dut.held) == 0
        if case == "too_many":
            assert b.down_log == []                 # refused before any read
        b.down_log.clear()
        cmds = traffic(b.rng, 80, set(addrs))
        await b.until_idle(ctx, cmds=cmds)          # nothing held: every command to DRAM
        assert b.got == b.expect and len(b.table_log()) == len(cmds)
        await b.until_idle(ctx, load=[3, 9])   # and a good load takes again
        assert ctx.get(dut.error) == ErrorCode.OK and ctx.get(dut.held) == 2
    b.run(script)


def test_a_load_into_a_store_that_holds_beats_changes_nothing():
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 4)
    hot = [4, 8, 15, 16]

    async def script(b, ctx):
        await b.until_idle(ctx, load=hot)
        await b.until_idle(ctx, cmds=[(4, 1, 111), (8, 1, 222)])
        b.down_log.clear()
        await b.until_idle(ctx, load=[20, 21, 22])
        assert ctx.get(dut.error) == ErrorCode.HOT_NOT_EMPTY and ctx.get(dut.held) == len(hot)
        assert b.down_log == []                     # refused before any read
        cmds = [(4, 0, 0), (20, 0, 0), (8, 0, 0)]
        ctx.set(dut.count, BEATS + 1)               # (accepted, it would be HOT_TOO_MANY)
        while not ctx.get(dut.busy):
            await b.tick(ctx, cmds)
        await b.tick(ctx, cmds, dut.flush)         # a flush and a load asked while busy: ignored
        assert ctx.get(dut.busy)
        await b.tick(ctx, cmds, dut.load)
        await b.until_idle(ctx, cmds=cmds)
        assert ctx.get(dut.held) == len(hot) and ctx.get(dut.counters.written_back) == 0
        assert ctx.get(dut.error) == ErrorCode.HOT_NOT_EMPTY     # (the earlier refused load's)
        assert b.got == b.expect == [111, initial(20), 222]
        assert b.table_log() == [(20, 0)]              # the held beats still served on chip
        b.down_log.clear()
        await b.until_idle(ctx, flush=True)
        assert sorted(b.table_log()) == [(4, 1), (8, 1)] and b.dram[4] == 111 and b.dram[8] == 222
    b.run(script)


def test_parameters_are_checked():
    for kw in (dict(beats=12), dict(ways=3), dict(ways=32, beats=64), dict(reads_in_flight=1), dict(beats=4, ways=8),
               dict(addr_bits=33)):
        with pytest.raises(ValueError, match="HotRowStore"):
            HotRowStore(**{"addr_bits": ADDR_BITS, "beats": 16, "ways": 4, **kw})


def test_the_configuration_names_a_bad_hot_parameter():
    from refree.gen.config import load_config
    assert load_config(None).hot.beats == 0          # the default chip has no store
    assert load_config(None, {"hot": {"beats": 4096, "ways": 8}}).hot.ways == 8
    for bad, field in (({"beats": 12}, "beats"), ({"ways": 3}, "ways"), ({"beats": 4, "ways": 8}, "ways"),
                       ({"ways": 0}, "ways")):
        with pytest.raises(ValueError, match=f"hot: HotStoreParams.{field}"):
            load_config(None, {"hot": bad})


def test_the_host_lists_a_hot_set_s_beats_and_names_a_bad_row():
    from refree.golden.errors import BatchError
    from refree.golden.traces import make_trace
    from refree.verif.staging import fit_hot_beats, hot_row_beats, layout
    tr = make_trace("movielens", 16, 1, seed=0)
    lay = layout(tr.batch, [np.zeros((n, 64), np.float32) for n in tr.num_rows])
    base, rows, stride = lay.tables[0]
    assert hot_row_beats([np.array([2, 0])], lay) == [base + 2 * stride + k for k in range(4)] + \
        [base + k for k in range(4)]
    for hot, why in (([np.array([rows])], f"row {rows} is outside table 0 of {rows} rows"),
                     ([np.array([-1])], "row -1 is outside"), ([np.array([3, 5, 3])], "row 3 is listed twice"),
                     ([np.array([1]), np.array([1])], "has rows of 2 tables; the batch has 1")):
        with pytest.raises(BatchError, match=why):
            hot_row_beats(hot, lay)

    # a hot set larger than a store of 8 beats of 2 ways: what fits, in order
    beats, (kept,) = fit_hot_beats((np.arange(6),), lay, 24, HotStoreParams(8, 2))
    assert 0 < len(kept) < 6 and beats == hot_row_beats([kept], lay)
    assert isinstance(placement(beats, 24, 8, 2), list)


@pytest.mark.parametrize("mode", ["baseline", "refree"])
def test_the_performance_model_serves_the_hot_beats_on_chip(mode):
    """golden/perf/hot_store.py in front of the DRAM side model: the beats it serves are the
    golden model's hits (``table_traffic``), and DRAM's commands fewer by as many."""
    from refree.gen.config import load_config
    from refree.golden.hot_rows import HotSet, table_traffic
    from refree.golden.perf.engine import job_cycles
    from refree.golden.traces import make_trace
    from refree.verif.engine_run import limits_of
    from refree.verif.staging import hot_row_beats, layout
    conf = load_config(None)
    tr = make_trace("movielens", 64, 1, seed=0)
    lay = layout(tr.batch, [np.zeros((n, 64), np.float32) for n in tr.num_rows],
                 stripe=conf.dram.mapping.staging_stripe)
    rows = np.unique(tr.batch.indices)[::3]
    hot = HotSet((rows,), len(rows) * 256, 64)
    limits = limits_of(conf.params)
    hits = 0
    for job in ("forward", "backward"):
        plain = job_cycles(tr.batch, lay, mode, job, limits, conf.dram)
        run = job_cycles(tr.batch, lay, mode, job, limits, conf.dram, hot_beats=hot_row_beats(hot.rows, lay))
        hits += run.commands["hot_hits"]
        assert run.commands["reads"] + run.commands["writes"] + run.commands["hot_hits"] == \
            plain.commands["reads"] + plain.commands["writes"]
    assert hits == table_traffic([tr.batch], hot, mode, limits)["hits"] * lay.row_beats > 0


@pytest.mark.parametrize("n", [0, 1, 16, 17])
def test_a_load_of_any_length(n):
    """The list's last beat whole or not (16 words a beat), one entry, none."""
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 10 + n)
    hot = fitting_hot_set(b.rng, n) if n else []

    async def script(b, ctx):
        await b.until_idle(ctx, load=hot)
        assert ctx.get(dut.error) == ErrorCode.OK and ctx.get(dut.held) == n
        assert b.table_log() == [(a, 0) for a in hot]
        assert [a for a, _ in b.down_log if a >= LIST_ADDR] == list(range(LIST_ADDR, LIST_ADDR + -(-n // LIST_WORDS)))
    b.run(script)


def test_a_load_failing_early_drops_the_rest_of_its_list():
    """A duplicate at the fourth of 30 beats: the two list beats are read whole, the rest
    dropped, the store empty again."""
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 11)
    hot = fitting_hot_set(b.rng, 29)
    listed = hot[:3] + hot[:1] + hot[3:]

    async def script(b, ctx):
        await b.until_idle(ctx, load=listed)
        assert ctx.get(dut.error) == ErrorCode.HOT_DUPLICATE and ctx.get(dut.held) == 0
        assert b.table_log() == [(a, 0) for a in hot[:3]]
        assert [a for a, _ in b.down_log if a >= LIST_ADDR] == [LIST_ADDR, LIST_ADDR + 1]
    b.run(script)


def test_a_strobe_beside_an_engine_command_is_ignored():
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=8)
    b = Bench(dut, 12)

    class Always:           # every command offered, every stream ready
        def random(self):
            return 0.0

        def __getattr__(self, name):
            return getattr(random.Random(0), name)

    async def script(b, ctx):
        await b.until_idle(ctx, load=[3, 9])
        b.rng = Always()
        ctx.set(dut.count, BEATS + 1)           # (a load taken would be HOT_TOO_MANY)
        for strobe, cmds in ((dut.flush, [(3, 1, 77)]), (dut.load, [(9, 0, 0)])):
            await b.tick(ctx, cmds, strobe)     # offered on an idle store beside a command: ignored
            await b.until_idle(ctx, cmds=cmds)
        assert ctx.get(dut.held) == 2 and ctx.get(dut.counters.written_back) == 0
        assert ctx.get(dut.error) == ErrorCode.OK and b.got == b.expect == [initial(9)]
        b.down_log.clear()
        await b.until_idle(ctx, flush=True)
        assert b.table_log() == [(3, 1)] and b.dram[3] == 77
    b.run(script)


def test_read_hits_go_on_while_a_miss_is_out():
    """A read hit waits for the reads before it in a queue as deep as the order queue, so
    that while a miss is out (its response not back) the store goes on taking hits until the
    order is full, not after the few places of a shallow queue (which held it to about four
    hits a DRAM latency: ``golden/perf/hot_store.py``)."""
    rif = 8
    dut = HotRowStore(ADDR_BITS, BEATS, WAYS, reads_in_flight=rif)
    b = Bench(dut, 5)
    hot = [4, 8, 15, 16]

    async def script(b, ctx):
        await b.until_idle(ctx, load=hot)
        cmds = [(40, 0, 0)] + [(hot[k % 4], 0, 0) for k in range(2 * rif)]   # a miss, then hits
        ctx.set(dut.up.rsp.ready, 0)            # the engine holds its responses; DRAM's never come
        ctx.set(dut.down.cmd.ready, 1)
        ctx.set(dut.down.rsp.valid, 0)
        taken = 0
        for _ in range(4 * rif):
            ctx.set(dut.up.cmd.valid, 1)
            ctx.set(dut.up.cmd.payload, {"addr": cmds[taken][0], "write": 0, "data": 0})
            if ctx.get(dut.up.cmd.ready):
                taken += 1
            await ctx.tick()
        assert taken == rif + 1                 # the order full (the miss and rif - 1 hits) and one in the stage
    b.run(script)
