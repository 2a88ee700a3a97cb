"""The analyzer (distinct rows, pairs, row order, partition by distinct rows) against the
golden planner, in Amaranth's simulator."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.batch import Batch
from refree.golden.planner import PartLimits, partition, plan_part
from refree.hw.engine.analyzer import Analyzer
from refree.hw.engine.params import EngineParams

from test_golden_planner import one_table

SMALL = EngineParams(index_width=16, max_bags=16, max_lookups=64, max_distinct_rows=12,
                     max_bag_len=8, radix_bits=3)


MAX_CYCLES = 100_000


def run_analyzer(params, bags, stall_every=0, backward=False, sort_bags=True):
    """Feed a table's bags as the controller would (bags/lookups limits checked here, the
    distinct-row limit by the analyzer); return per part: bag range, order, pairs, counts."""
    dut = Analyzer(params)
    parts = []

    async def bench(ctx):
        b0 = 0
        while b0 < len(bags):
            ctx.set(dut.start, 1)
            ctx.set(dut.backward, backward)
            ctx.set(dut.sort_bags, sort_bags)
            await ctx.tick()
            ctx.set(dut.start, 0)
            b, lookups, full = b0, 0, False
            while b < len(bags) and b - b0 < params.max_bags and lookups + len(bags[b]) <= params.max_lookups:
                for k, r in enumerate(bags[b]):
                    ctx.set(dut.lookups.payload.row, int(r))
                    ctx.set(dut.lookups.payload.bag, b - b0)
                    ctx.set(dut.lookups.valid, 1)
                    for _ in range(MAX_CYCLES):
                        if ctx.get(dut.lookups.ready):
                            break
                        await ctx.tick()
                    else:
                        raise AssertionError("the analyzer stopped taking lookups")
                    await ctx.tick()
                    if stall_every and k % stall_every == 0:
                        ctx.set(dut.lookups.valid, 0)
                        await ctx.tick()
                    if ctx.get(dut.full):
                        full = True
                        break
                ctx.set(dut.lookups.valid, 0)
                if full:
                    break
                lookups += len(bags[b])
                b += 1
            ctx.set(dut.finish, 1)
            await ctx.tick()
            ctx.set(dut.finish, 0)
            members, cycle = [], 0
            while ctx.get(dut.busy):
                assert cycle < MAX_CYCLES, "the analyzer did not finish"
                take = not (stall_every and cycle % stall_every == 0)   # consumer backpressure
                ctx.set(dut.members.ready, take)
                if take and ctx.get(dut.members.valid):
                    members.append({k: ctx.get(getattr(dut.members.payload, k))
                                    for k in ("slot", "row", "bags", "bag", "mult", "first", "upd")})
                await ctx.tick()
                cycle += 1
            end = b0 + ctx.get(dut.full_bag) if ctx.get(dut.full) else b
            parts.append(dict(bags=(b0, end), members=members,
                              rows=ctx.get(dut.num_rows), lookups=ctx.get(dut.num_lookups),
                              pairs=ctx.get(dut.num_pairs)))
            b0 = end

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return parts


def check(params, bags, **kw):
    check_backward(params, bags, **kw)
    check_backward(params, bags, sort_bags=False, **kw)
    return check_forward(params, bags, **kw)


def check_backward(params, bags, sort_bags=True, **kw):
    """Backward: pairs grouped by bag in the golden gradient-row order (rows per bag
    descending, then bag; bag order without ``sort_bags``), a bag's pairs by first
    appearance; then every slot's row."""
    batch = one_table(bags)
    limits = PartLimits(params.max_bags, params.max_lookups, params.max_distinct_rows, params.max_bag_len)
    want = partition(batch, limits)
    got = run_analyzer(params, bags, backward=True, sort_bags=sort_bags, **kw)
    assert [p["bags"] for p in got] == [(p.bag_lo, p.bag_hi) for p in want]
    for g, part in zip(got, want):
        plan = plan_part(batch, part, "sum")
        slot_of, pairs = {}, {}
        for b in range(part.bag_lo, part.bag_hi):
            for r in bags[b]:
                slot_of.setdefault(r, len(slot_of))
                pairs.setdefault(b - part.bag_lo, {})
                pairs[b - part.bag_lo][r] = pairs[b - part.bag_lo].get(r, 0) + 1
        # the golden key order lists each gradient row's keys together, rows in order
        bag_order = list(dict.fromkeys(plan.bkey_bag.tolist()))
        assert bag_order == sorted(pairs, key=lambda b: (-len(pairs[b]), b))
        if not sort_bags:
            bag_order = sorted(pairs)
        want_members = [dict(slot=slot_of[r], row=r, bags=0, bag=b, mult=n, first=int(k == 0), upd=0)
                        for b in bag_order for k, (r, n) in enumerate(pairs[b].items())]
        want_members += [dict(slot=k, row=r, bags=0, bag=0, mult=0, first=0, upd=1)
                         for k, r in enumerate(slot_of)]
        assert g["members"] == want_members
        assert g["rows"] == len(plan.rows)


def check_forward(params, bags, **kw):
    batch = one_table(bags)
    limits = PartLimits(params.max_bags, params.max_lookups, params.max_distinct_rows, params.max_bag_len)
    want = partition(batch, limits)
    got = run_analyzer(params, bags, **kw)
    assert [p["bags"] for p in got] == [(p.bag_lo, p.bag_hi) for p in want]
    for g, part in zip(got, want):
        plan = plan_part(batch, part, "sum")
        assert g["rows"] == len(plan.rows) and g["lookups"] == part.hi - part.lo
        # Expected members: rows in the golden row order, each row's bags ascending with
        # the row's multiplicity in the bag; slots numbered by first appearance.
        slot_of, mult = {}, {}
        for b in range(part.bag_lo, part.bag_hi):
            for r in bags[b]:
                slot_of.setdefault(r, len(slot_of))
                mult[(r, b - part.bag_lo)] = mult.get((r, b - part.bag_lo), 0) + 1
        want_members = []
        for r, nb in zip(plan.rows.tolist(), plan.row_bags.tolist()):
            mine = sorted(b for (rr, b) in mult if rr == r)
            want_members += [dict(slot=slot_of[r], row=r, bags=nb, bag=b, mult=mult[(r, b)], first=int(k == 0),
                                  upd=0)
                             for k, b in enumerate(mine)]
        assert g["members"] == want_members
        assert g["pairs"] == len(want_members)
    return got


def test_worked_example():
    got = check(SMALL, [[5, 2, 0], [5, 2, 6], [5, 2], [1]])
    assert [(x["row"], x["bags"]) for x in got[0]["members"] if x["first"]][:2] == [(2, 3), (5, 3)]


def test_repeated_rows_colliding_hashes_and_empty_bags():
    # The hash XOR-folds the row's bits: 3, H+2 and 2H+1 all land on entry 3 and must
    # probe, and 4 then finds its entry taken by the probe chain.
    h = SMALL.hash_depth
    bags = [[3, 3, h + 2, 3], [], [h + 2, 4, 4], [2 * h + 1], [], [4, 2 * h + 1, h + 2, 3]]
    check(SMALL, bags)


def test_partition_by_distinct_rows_rolls_back_the_bag():
    rng = np.random.default_rng(3)
    bags = [list(rng.integers(0, 40, rng.integers(0, 8))) for _ in range(30)]
    got = check(SMALL, bags)
    assert len(got) > 2


@pytest.mark.parametrize("seed", range(3))
def test_random_tables_with_input_stalls(seed):
    rng = np.random.default_rng(seed)
    params = EngineParams(index_width=20, max_bags=8, max_lookups=40, max_distinct_rows=24,
                          max_bag_len=8, radix_bits=4)
    bags = [list(rng.zipf(1.3, rng.integers(0, 9)) % 1000) for _ in range(40)]
    check(params, bags, stall_every=3 if seed == 1 else 0)


def test_a_part_of_empty_bags_finishes():
    # The controller's finish comes the cycle after start when a part has no lookups.
    check(SMALL, [[]] * 20 + [[1, 1], []])


def test_more_pairs_than_slot_counts_hold():
    # 65 pairs in a part of 22 rows: the member-list offsets need the pair width, not the
    # slot width (a MovieLens window found this).
    params = EngineParams(index_width=16, max_bags=8, max_lookups=200, max_distinct_rows=24,
                          max_bag_len=24, radix_bits=4)
    common = [16, 142, 92, 141, 50, 52, 19, 135, 2, 53, 14, 25, 30, 148, 46, 48, 89, 6]
    check(params, [[30, 148, 46, 48, 89], [3, 9] + common, [9] + common + [155], common + [155, 86]])
