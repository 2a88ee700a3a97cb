"""The sharing scheduler and the fold datapath alone, as the engine connects them, on one
part's member stream (the analyzer's member lists, built here from the golden model's plan),
with the rows always there and the results always taken: the fold's own speed, without the
analysis, the sort or memory.  Used by the scheduler's and datapath's tests and by
``python -m refree.verif.bench_fold``."""
import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from refree.hw.engine.datapath import FoldDatapath
from refree.hw.engine.scheduler import ShareScheduler

__all__ = ["mark_member_last", "member_stream", "feed_part", "fold_cycles"]


def mark_member_last(out):
    """Set ``member_last`` on each member's last item of a stream."""
    last = {x["member"]: k for k, x in enumerate(out)}
    for k, x in enumerate(out):
        x["member_last"] = int(last[x["member"]] == k)
    return out


def member_stream(plan, share):
    """The analyzer's member lists of a plan: rows in row order, a row's bags ascending."""
    out = []
    for pos, r in enumerate(plan.rows.tolist()):
        bags = plan.occ_bag[plan.occ_row == r]
        for k, b in enumerate(sorted(set(bags.tolist()))):
            mult = int((bags == b).sum())
            c = np.float32(mult if share else 1).view(np.uint32)
            out.append(dict(item=pos, member=b, c=int(c), kind=0, repeat=1 if share else mult,
                            first=int(k == 0)))
    return mark_member_last(out)


async def feed_part(ctx, sch, stream):
    """Offer ``stream``'s items to the scheduler ``sch`` one at a time, each until it is
    taken, then pulse ``end`` (the part's end, after its last item, as the engine does)."""
    for x in stream:
        for k, v in x.items():
            ctx.set(getattr(sch.items.payload, k), v)
        ctx.set(sch.items.valid, 1)
        await ctx.tick().until(sch.items.ready)
    ctx.set(sch.items.valid, 0)
    ctx.set(sch.end, 1)
    await ctx.tick()
    ctx.set(sch.end, 0)


def fold_cycles(plan, share, *, window=None, dim=16, max_cycles=1_000_000, since_first_member=False):
    """Cycles from the part's start (``since_first_member``: from its first member taken, after
    the scheduler's clear) to its last result beat, and the operations the datapath took.  ``dim`` = 16 (the datapath's 16 lanes): one beat an operation, as D = 64
    at the chip's 64 lanes; ``window`` the datapath's issue window (None: its default)."""
    stream = member_stream(plan, share)
    members = 1 + max((x["member"] for x in stream), default=-1)
    sch = ShareScheduler(num_members=max(members, 8), item_bits=max(1, len(plan.rows).bit_length()))
    dp = FoldDatapath.for_scheduler(sch, dim, window=window)
    top = Module()
    top.submodules.sch, top.submodules.dp = sch, dp
    wiring.connect(top, sch.ops, dp.ops)
    clock = Signal(32)
    top.d.sync += clock.eq(clock + 1)
    got = {"last": 0, "beats": 0, "ops": 0, "first": None}

    async def items(ctx):
        ctx.set(sch.share, share)
        ctx.set(sch.early, 1)
        ctx.set(sch.num_members, members)
        ctx.set(sch.start, 1)
        ctx.set(dp.start, 1)
        await ctx.tick()
        ctx.set(sch.start, 0)
        ctx.set(dp.start, 0)
        await feed_part(ctx, sch, stream)

    async def rows(ctx):
        ctx.set(dp.rows.valid, 1)               # (any row: the values are not looked at)
        while True:
            await ctx.tick()

    async def results(ctx):
        ctx.set(dp.results.ready, 1)
        while got["beats"] < members * dp.beats:
            _, _, now, valid, op, item = await ctx.tick().sample(
                clock, dp.results.valid, dp.ops.valid & dp.ops.ready, sch.items.valid & sch.items.ready)
            if item and got["first"] is None:
                got["first"] = now
            got["beats"] += valid
            got["ops"] += op
            got["last"] = now if valid else got["last"]
            assert now < max_cycles, "the fold did not finish"

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(items)
    sim.add_testbench(rows, background=True)
    sim.add_testbench(results)
    sim.run()
    start = got["first"] if since_first_member and got["first"] is not None else 0
    return got["last"] - start, got["ops"]
