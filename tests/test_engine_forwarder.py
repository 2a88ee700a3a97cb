"""The row forwarder with the table of rows in flight, in Amaranth's simulator, against a
sequential reference: lookups of a few rows, repeated often and close together, each
"updated" by adding one to its row.  DRAM returns each row as it was when the lookup was
issued (stale whenever an earlier update of the row is still in flight), after a random
delay; the updater stand-in adds one after a fixed latency under random backpressure.
Every update must see the one before it: occurrence i of row r leaves as r's first value
+ i, and DRAM ends with every row + its count."""
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from refree.hw.engine.forwarder import RowForwarder
from refree.hw.engine.inflight import RowsInFlight

SLOTS = 4


def run(rows, seed, BEATS, LATENCY):
    rng = random.Random(seed)
    m = Module()
    m.submodules.locks = locks = RowsInFlight(8, SLOTS)
    m.submodules.fwd = fwd = RowForwarder(SLOTS, BEATS)
    first = {r: [1000 * r + 10 * b for b in range(BEATS)] for r in set(rows)}
    memory = {r: list(v) for r, v in first.items()}
    forwarded, results, waited = [0], [], [0]

    async def bench(ctx):
        issued, cycle = 0, 0
        dram = []           # (cycle the beat arrives, value), in issue order
        pipe = []           # (cycle the result leaves, value)
        out_beat = 0
        while len(results) < len(rows) * BEATS:
            cycle += 1
            assert cycle < 20_000, "stalled"
            # issue the next lookup unless the table is full
            push = False
            if issued < len(rows):
                ctx.set(locks.addr, rows[issued])
                push = not ctx.get(locks.full) and ctx.get(fwd.issue.ready)
            ctx.set(locks.push, push)
            ctx.set(fwd.issue.valid, push)
            if push:
                r = rows[issued]
                ctx.set(fwd.issue.payload, {"forwarded": ctx.get(locks.latest_hit), "src": ctx.get(locks.latest),
                                            "slot": ctx.get(locks.slot)})
                forwarded[0] += ctx.get(locks.latest_hit)
                at = max([cycle + rng.randint(2, 25)] + [c for c, _ in dram[-1:]])
                dram += [(at, v) for v in memory[r]]        # as it is now: stale if in flight
                issued += 1
            # the updater stand-in: +1 after LATENCY cycles, under backpressure
            ctx.set(fwd.o.ready, rng.random() < 0.7)
            if ctx.get(fwd.o.valid) and ctx.get(fwd.o.ready):
                pipe.append((cycle + LATENCY, ctx.get(fwd.o.payload) + 1))
            give = bool(dram) and dram[0][0] <= cycle
            ctx.set(fwd.i.valid, give)
            ctx.set(fwd.i.payload, dram[0][1] if give else 0)
            if give and ctx.get(fwd.i.ready):
                dram.pop(0)
            elif give and not (ctx.get(fwd.o.valid) and not ctx.get(fwd.o.ready)):
                waited[0] += 1                              # for a source's result
            back = bool(pipe) and pipe[0][0] <= cycle
            ctx.set(fwd.result.valid, back)
            ctx.set(locks.pop, 0)
            if back:
                value = pipe.pop(0)[1]
                ctx.set(fwd.result.payload, value)
                r = rows[len(results) // BEATS]
                memory[r][out_beat] = value                 # written back
                results.append(value)
                if out_beat == BEATS - 1:
                    ctx.set(locks.pop, 1)                   # its last beat written
                out_beat = (out_beat + 1) % BEATS
            await ctx.tick()
        ctx.set(fwd.result.valid, 0)
        ctx.set(locks.pop, 0)
        await ctx.tick()
        assert not ctx.get(fwd.busy)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return first, memory, forwarded[0], results, waited[0]


@pytest.mark.parametrize("BEATS, LATENCY", [(1, 6), (2, 6), (4, 6), (1, 40)])
def test_every_update_sees_the_one_before_it(BEATS, LATENCY):
    rng = random.Random(7)
    rows = [rng.choice([1, 2, 3, 3, 3, 4, 5]) for _ in range(300)] + [9] * 12
    first, memory, forwarded, results, waited = run(rows, 1, BEATS, LATENCY)
    count = {}
    for k, r in enumerate(rows):
        i = count[r] = count.get(r, 0) + 1
        assert results[k * BEATS:(k + 1) * BEATS] == [v + i for v in first[r]], f"lookup {k}, row {r}"
    assert memory == {r: [v + count[r] for v in first[r]] for r in first}
    assert forwarded > len(rows) // 4          # the test exercises forwarding, often ...
    assert waited > 0                          # ... and a lookup waiting for its source
