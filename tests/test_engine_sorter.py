"""The analyzer's radix sorter against numpy's stable sort, on random keys: the order, the
passes it skips and the cycles it takes."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.engine.sorter import RadixSorter

CAP, KL, KH, RADIX = 64, 10, 4, 3       # 14-bit keys in 3-bit digits: 5 passes


def passes_needed(low_max, high_max):
    """The passes whose digit may differ, by the sorter's rule: a bound with a bit at or
    above the pass's first bit of its half; at least one (the last)."""
    n = 0
    for k in range(-(-(KL + KH) // RADIX)):
        lo, hi = k * RADIX, min(k * RADIX + RADIX, KL + KH)
        low_varies = lo < KL and (low_max >> lo) != 0
        high_varies = hi > KL and (high_max >> max(lo - KL, 0)) != 0
        n += low_varies or high_varies
    return max(n, 1)


def run_sorts(cases):
    """Each case (low, high, low_max, high_max) sorted in turn on one sorter; the owner's
    key table answers ``key_addr`` a cycle later, as a synchronous SRAM read.  Returns
    (order, cycles from start to done) per case."""
    dut = RadixSorter(CAP, KL, KH, RADIX)
    results = []

    async def bench(ctx):
        for low, high, low_max, high_max in cases:
            n = len(low)
            ctx.set(dut.n, n)
            ctx.set(dut.low_max, low_max)
            ctx.set(dut.high_max, high_max)
            ctx.set(dut.start, 1)
            cycles = 0
            while True:
                _, _, addr, read, done = await ctx.tick().sample(dut.key_addr, dut.key_read, dut.done)
                ctx.set(dut.start, 0)
                cycles += 1
                if read and addr < n:
                    ctx.set(dut.key_low, int(low[addr]))
                    ctx.set(dut.key_high, int(high[addr]))
                if done:
                    break
                assert cycles < 10_000, "the sort never ends"
            order = []
            for k in range(n):
                ctx.set(dut.order_addr, k)
                await ctx.tick()
                order.append(ctx.get(dut.order))
            results.append((order, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def random_case(rng):
    n = int(rng.choice([0, 1, 2, int(rng.integers(3, CAP + 1)), CAP]))
    lbits, hbits = int(rng.integers(0, KL + 1)), int(rng.integers(0, KH + 1))
    low = rng.integers(0, 1 << lbits, n)
    high = rng.integers(0, 1 << hbits, n)
    if rng.random() < 0.3:                      # few distinct keys: long runs of equal keys
        low, high = low % 3, high % 2
    # the owner's bounds: the OR of the values (as the analyzer's rows) or a larger value
    low_max = int(np.bitwise_or.reduce(low)) if n else 0
    high_max = int(np.bitwise_or.reduce(high)) if n else 0
    if rng.random() < 0.5:
        low_max = max(low_max, int(rng.integers(0, 1 << KL)))
    return low, high, low_max, high_max


def test_sorted_as_numpy_sorts_high_descending_then_low_stably():
    rng = np.random.default_rng(7)
    cases = [random_case(rng) for _ in range(40)]
    cases.append((np.arange(CAP)[::-1] % 8, np.arange(CAP) % 16, 7, 15))      # every pass, full
    # an owner's bounds may lie beyond the key's widths (the analyzer's distinct rows, up to
    # 2**KH and more): every pass of that half is needed, none dropped by a truncated bound
    cases.append((rng.integers(0, 1 << KL, CAP), rng.integers(0, 1 << KH, CAP), 1 << KL, 1 << KH))
    cases.append((np.zeros(CAP, int), rng.integers(0, 1 << KH, CAP), 0, 1 << KH))
    for (low, high, low_max, high_max), (order, cycles) in zip(cases, run_sorts(cases)):
        n = len(low)
        want = np.lexsort((low, -high.astype(np.int64))) if n else []     # stable
        assert order == list(want), (low, high)
        # a counting walk and one scatter per needed pass, a walk of at most 2**radix digits,
        # and a few cycles of fill per walk
        assert cycles <= (passes_needed(low_max, high_max) + 1) * (n + 4) + (1 << RADIX) + 8, cycles


@pytest.mark.parametrize("low_max, high_max, passes", [(0, 0, 1), (7, 0, 1), (8, 0, 2), (1023, 15, 5)])
def test_passes_skipped_by_the_bounds(low_max, high_max, passes):
    """Equal keys: the cycles grow by a walk over the elements per needed pass."""
    n = 48
    (order, cycles), = run_sorts([(np.zeros(n, int), np.zeros(n, int), low_max, high_max)])
    assert order == list(range(n))
    assert passes_needed(low_max, high_max) == passes
    assert (passes + 1) * n < cycles <= (passes + 1) * (n + 4) + 8
