"""The analyzer's radix sorter against numpy's stable sort, on random keys: the order, the
passes it skips and the cycles it takes."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.engine.sorter import RadixSorter

CAP, KL, KH, RADIX = 64, 10, 4, 3       # 10 low bits: 4 digits; 4 high bits: 2 digits


def walks_needed(low_max, high_max):
    """The walk passes by the sorter's rule: a low digit after the first (built as the
    elements are added) when ``low_max`` has a bit at or above its first bit; the first high
    digit always; a later one when ``high_max`` has such a bit."""
    low = sum((low_max >> (k * RADIX)) != 0 for k in range(1, -(-KL // RADIX)))
    high = 1 + sum((high_max >> (k * RADIX)) != 0 for k in range(1, -(-KH // RADIX)))
    return low + high


def run_sorts(cases):
    """Each case (low, high, low_max, high_max, n) on one sorter in turn: every element of
    ``low`` added (those from ``n`` on are given up, as the analyzer's rolled-back slots),
    then sorted; the owner's key table answers ``key_addr`` a cycle later, as a synchronous
    SRAM read.  Returns (order, cycles from start to done) per case."""
    dut = RadixSorter(CAP, KL, KH, RADIX)
    results = []

    async def bench(ctx):
        for low, high, low_max, high_max, n in cases:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for e, key in enumerate(low):
                ctx.set(dut.add, 1)
                ctx.set(dut.add_elem, e)
                ctx.set(dut.add_low, int(key))
                await ctx.tick()
            ctx.set(dut.add, 0)
            ctx.set(dut.n, n)
            ctx.set(dut.low_max, low_max)
            ctx.set(dut.high_max, high_max)
            ctx.set(dut.start, 1)
            cycles = 0
            while True:
                _, _, addr, read, done = await ctx.tick().sample(dut.key_addr, dut.key_read, dut.done)
                ctx.set(dut.start, 0)
                cycles += 1
                if read:
                    assert addr < len(low)
                    ctx.set(dut.key_low, int(low[addr]))
                    ctx.set(dut.key_high, int(high[addr]))
                if done:
                    break
                assert cycles < 10_000, "the sort never ends"
            order = []
            for k in range(n):                  # (with a pause now and then)
                ctx.set(dut.order_next, 1)
                await ctx.tick()
                ctx.set(dut.order_next, 0)
                order.append(ctx.get(dut.order))
                if k % 5 == 2:
                    await ctx.tick()
            results.append((order, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def random_case(rng):
    added = int(rng.choice([0, 1, 2, int(rng.integers(3, CAP + 1)), CAP]))
    n = added if rng.random() < 0.5 else int(rng.integers(0, added + 1))
    lbits, hbits = int(rng.integers(0, KL + 1)), int(rng.integers(0, KH + 1))
    low = rng.integers(0, 1 << lbits, added)
    high = rng.integers(0, 1 << hbits, added)
    if rng.random() < 0.3:                      # few distinct keys: long runs of equal keys
        low, high = low % 3, high % 2
    # the owner's bounds: the OR of the values (as the analyzer's rows) or a larger value
    low_max = int(np.bitwise_or.reduce(low)) if added else 0
    high_max = int(np.bitwise_or.reduce(high)) if added else 0
    if rng.random() < 0.5:
        low_max = max(low_max, int(rng.integers(0, 1 << KL)))
    return low, high, low_max, high_max, n


def test_sorted_as_numpy_sorts_high_descending_then_low_stably():
    rng = np.random.default_rng(7)
    cases = [random_case(rng) for _ in range(40)]
    cases.append((np.arange(CAP)[::-1] % 8, np.arange(CAP) % 16, 7, 15, CAP))      # every list long
    # an owner's bounds may lie beyond the key's widths (the analyzer's distinct rows, up to
    # 2**KH and more): every pass of that half is needed, none dropped by a truncated bound
    cases.append((rng.integers(0, 1 << KL, CAP), rng.integers(0, 1 << KH, CAP), 1 << KL, 1 << KH, CAP))
    cases.append((np.zeros(CAP, int), rng.integers(0, 1 << KH, CAP), 0, 1 << KH, CAP - 3))
    for (low, high, low_max, high_max, n), (order, cycles) in zip(cases, run_sorts(cases)):
        want = np.lexsort((low[:n], -high[:n].astype(np.int64))) if n else []     # stable
        assert order == list(want), (low, high, n)
        # a walk per needed pass over the elements added, and a few cycles of fill per walk
        assert cycles <= walks_needed(low_max, high_max) * (len(low) + 4) + 4, cycles


@pytest.mark.parametrize("low_max, high_max, walks", [(0, 0, 1), (7, 0, 1), (8, 0, 2), (1023, 15, 5)])
def test_passes_skipped_by_the_bounds(low_max, high_max, walks):
    """Equal keys: the cycles grow by a walk over the elements per needed pass; the first
    low digit's pass costs none (built as the elements are added)."""
    n = 48
    (order, cycles), = run_sorts([(np.zeros(n, int), np.zeros(n, int), low_max, high_max, n)])
    assert order == list(range(n))
    assert walks_needed(low_max, high_max) == walks
    assert walks * n < cycles <= walks * (n + 4) + 4
