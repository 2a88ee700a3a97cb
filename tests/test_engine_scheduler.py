"""The sharing scheduler: its operations, replayed with binary32 arithmetic, give the golden
model's forward values bit for bit, and it makes exactly one operation per trie node."""
import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.arith import fma
from refree.golden.counts import count_part
from refree.golden.model import step
from refree.golden.planner import PartLimits, partition, plan_part
from refree.hw.engine.scheduler import ShareScheduler
from refree.verif.fold_harness import feed_part, mark_member_last, member_stream

from test_golden_planner import one_table

MAX_CYCLES = 200_000


def run_parts(dut, parts, share, early=True, ops_stall=0, cycles=None, start_at=None):
    """Run ``parts`` ([(stream, members)], one after the other) on one instance ``dut``.
    Returns each part's operations and finals (``final`` set) in the order they left;
    ``cycles`` (a list) gets the cycle each of the last part's left in; every ``ops_stall``-th
    cycle ``ops`` is not ready.  ``start_at``: the first part starts that many cycles after
    reset, maybe during the clear of the class tables that follows it (None: once ``busy``
    has fallen)."""
    got = [[] for _ in parts]

    async def feed(ctx):
        if start_at:
            await ctx.tick().repeat(start_at)
        for k, (items, n) in enumerate(parts):
            while ctx.get(dut.busy) and not (start_at is not None and k == 0):
                await ctx.tick()
            ctx.set(dut.share, share)
            ctx.set(dut.early, early)
            ctx.set(dut.num_members, n)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await feed_part(ctx, dut, items)

    async def drain(ctx):
        cycle = 0
        await ctx.tick()
        for k, ((_, n), ops) in enumerate(zip(parts, got)):
            last = k == len(parts) - 1
            while sum(op["final"] for op in ops) < n or last and ctx.get(dut.busy):
                assert cycle < MAX_CYCLES, "the scheduler did not finish"
                take = not (ops_stall and cycle % ops_stall == 0)
                ctx.set(dut.ops.ready, take)
                if take and ctx.get(dut.ops.valid):
                    ops.append({f: ctx.get(getattr(dut.ops.payload, f))
                                for f in ("dst", "src", "src_zero", "item", "item_first", "c", "final")})
                    if cycles is not None and last:
                        cycles.append(cycle)
                    assert ops[-1]["dst"] < dut.num_classes, "a class beyond the datapath's partial sums"
                await ctx.tick()
                cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    return got


def run_scheduler(stream, num_members, share, ops_stall=0, warmup=None, early=True, cycles=None,
                  start_at=None):
    """Run one part (see :func:`run_parts`); `warmup` (a stream) runs as an earlier part on
    the same instance, so that state left by a part (recycled classes, tags) is exercised.
    Returns the part's operations and finals."""
    dut = ShareScheduler(num_members=max(num_members, 8), item_bits=12)
    parts = ([(warmup, 8)] if warmup else []) + [(stream, num_members)]
    return run_parts(dut, parts, share, early, ops_stall, cycles, start_at)[-1]


def replay(ops, rows, E, D, num_members):
    """Execute the operations with binary32 FMA, as the vector datapath will, each final
    reading its class where it comes in the stream; one final per member."""
    PS, out = {}, {}
    for op in ops:
        acc = np.zeros(D, np.float32) if op["src_zero"] else PS[op["src"]]
        if op["final"]:
            assert op["dst"] not in out, f"member {op['dst']}: a second final"
            out[op["dst"]] = acc
            continue
        c = np.uint32(op["c"]).view(np.float32)
        PS[op["dst"]] = fma(c, E[rows[op["item"]]], acc)
    assert sorted(out) == list(range(num_members))
    return np.array([out[k] for k in range(num_members)])


def check(bags, rows_total, seed=0, ops_stall=0, warmup=None, start_at=None):
    batch = one_table(bags)
    rng = np.random.default_rng(seed)
    D = 3
    E = rng.standard_normal((rows_total, D)).astype(np.float32)
    part = partition(batch, PartLimits.unlimited())[0]
    plan = plan_part(batch, part, "sum")
    G = np.zeros((len(bags), D), np.float32)
    for (share, mode), early in itertools.product(((1, "refree"), (0, "dedup")), (True, False)):
        stream = run_scheduler(member_stream(plan, share), len(bags), share, ops_stall,
                               warmup and member_stream(warmup, share), early, start_at=start_at)
        got = replay(stream, plan.rows.tolist(), E, D, len(bags))
        want = step([E], batch, G, 0.0, mode=mode).pooled
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), mode
        ops = [op for op in stream if not op["final"]]
        counts = count_part(plan, mode)["forward"]
        assert sum(1 for op in ops if not op["src_zero"]) == counts["adds"], mode
        if share:
            assert len(ops) == plan.fwd_trie.num_nodes
        assert [op["item"] for op in ops if op["item_first"]] == list(range(len(plan.rows)))
        # early: a member's final as soon as its last item is decided, so the first final
        # comes before the last operation whenever a member is complete three items before
        # the last (the final's queue takes two cycles, and an item can take one)
        last_op = max(k for k, op in enumerate(stream) if not op["final"])
        first_final = min(k for k, op in enumerate(stream) if op["final"])
        last_items = set(plan.rows.tolist()[-3:])
        if early and any(b and not last_items & set(b) for b in bags):
            assert first_final < last_op, mode
        if not early:
            assert first_final > last_op and [op["dst"] for op in stream[first_final:]] == list(range(len(bags)))


def test_worked_example_makes_three_additions_not_five():
    check([[5, 2, 0], [5, 2, 6], [5, 2], [1]], 8)


def test_repeated_rows_make_coefficients_that_conflict_in_a_class():
    # bags 0 and 1 share the prefix [2]; row 5 then comes with c = 2 in bag 0 and c = 1 in
    # bag 1: the same class splits two ways in one item (a deferred sweep).
    check([[2, 5, 5], [2, 5], [2, 5, 5], [], [5]], 8)


@pytest.mark.parametrize("seed", range(3))
def test_random_bags_with_output_backpressure(seed):
    rng = np.random.default_rng(seed)
    bags = [list(rng.zipf(1.4, rng.integers(0, 7)) % 12) for _ in range(20)]
    check(bags, 12, seed, ops_stall=3 if seed == 2 else 0)


@pytest.mark.parametrize("start_at", [0, 8, 9, 10, 11, 12])
def test_a_part_started_during_the_clear_after_reset(start_at):
    """The engine starts its first part whenever its analysis ends, maybe while the class
    tables are still being cleared after reset (11 cycles here: 8 members, 3 spare classes):
    the part is taken, also in the clear's last cycle, and runs after the clear; a part
    with only empty bags has its ``end`` during the clear; with a warm-up part, the part
    after it starts from IDLE."""
    bags = [[2, 5, 5], [2, 5], [2, 5, 5], [], [5]]
    check(bags, 8, start_at=start_at)
    ops = run_scheduler([], 3, 1, early=False, start_at=start_at)    # (end a cycle after start)
    assert [(op["final"], op["dst"], op["src_zero"]) for op in ops] == [(1, k, 1) for k in range(3)]
    if start_at == 0:
        first = one_table([[5, 1], [5, 2], [6, 1], [6, 2], [], [], [], []])
        check(bags, 8, warmup=plan_part(first, partition(first, PartLimits.unlimited())[0], "sum"), start_at=0)


def test_the_clear_after_reset_lands_in_no_part():
    """The class tables are cleared once after reset, before any part (a job does not wait
    for it): a part started after it has its first operation a few cycles after ``start``."""
    dut = ShareScheduler(num_members=1024, item_bits=12)
    seen = []

    async def bench(ctx):
        idle_at = 0
        while ctx.get(dut.busy):
            await ctx.tick()
            idle_at += 1
        assert idle_at == dut.num_classes           # (the clear, a cycle per class)
        for k, v in (("share", 1), ("early", 0), ("num_members", 1), ("start", 1)):
            ctx.set(getattr(dut, k), v)
        ctx.set(dut.items.valid, 1)
        ctx.set(dut.ops.ready, 1)
        for k, v in dict(item=0, member=0, c=0x3F800000, first=1, member_last=1).items():
            ctx.set(getattr(dut.items.payload, k), v)
        for cycle in range(16):                     # (cycle 0: start)
            await ctx.delay(1e-9)
            taken = ctx.get(dut.items.valid) and ctx.get(dut.items.ready)
            if ctx.get(dut.ops.valid):
                seen.append(cycle)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.end, taken)                 # (the part's end: after its one item)
            if taken:
                ctx.set(dut.items.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen and seen[0] <= 6, seen


def test_the_tags_wrap_round_through_a_clear():
    """With 4-bit tags the class tables are cleared (IDLE, CLEAR, FORGET_FREE) before a part
    or sweep tag could come round, every two or three parts (a part starts below sweep 8 and
    makes at most 8 sweeps here: 6 rows, a round or two): every part's folds stay the golden
    model's, in both modes.  (Tags too narrow for a part's sweeps, 3 bits here, fail.)"""
    rng = np.random.default_rng(7)
    batches = [one_table([list(rng.integers(0, 6, rng.integers(0, 4))) for _ in range(6)]) for _ in range(8)]
    plans = [plan_part(b, partition(b, PartLimits.unlimited())[0], "sum") for b in batches]
    E = rng.standard_normal((6, 3)).astype(np.float32)
    for share, mode in ((1, "refree"), (0, "dedup")):
        dut = ShareScheduler(num_members=8, item_bits=12, tag_bits=4)
        got = run_parts(dut, [(member_stream(plan, share), 6) for plan in plans], share, early=False)
        for plan, b, ops in zip(plans, batches, got):
            want = step([E], b, np.zeros((6, 3), np.float32), 0.0, mode=mode).pooled
            assert np.array_equal(replay(ops, plan.rows.tolist(), E, 3, 6).view(np.uint32), want.view(np.uint32))


def test_a_second_part_on_the_same_instance():
    """Classes recycled in one part must not leak into the next one: the first part frees
    two classes at its end; in the second every bag keeps its own class to the end, so a
    leaked free class would be handed out twice."""
    first = one_table([[5, 1], [5, 2], [6, 1], [6, 2], [], [], [], []])
    plan = plan_part(first, partition(first, PartLimits.unlimited())[0], "sum")
    check([[7], [8], [9], [3], [0], [1]], 10, warmup=plan)


def gradient_stream(plan, share):
    """The analyzer's backward member lists: gradient rows (bags) in the design's order
    (``refree``) or bag order (``dedup``, whose merge folds in index order), each bag's
    distinct rows by first appearance with the row's multiplicity in the bag."""
    order = list(dict.fromkeys(plan.bkey_bag.tolist())) if share else sorted(set(plan.occ_bag.tolist()))
    pos = {r: k for k, r in enumerate(plan.rows.tolist())}
    out = []
    for b in order:
        rows = plan.occ_row[plan.occ_bag == b].tolist()
        for k, r in enumerate(dict.fromkeys(rows)):
            mult = rows.count(r)
            c = np.float32(mult if share else 1).view(np.uint32)
            out.append(dict(item=b, member=pos[r], c=int(c), kind=0, repeat=1 if share else mult,
                            first=int(k == 0)))
    return mark_member_last(out)


@pytest.mark.parametrize("bags", [[[5, 2, 0], [5, 2, 6], [5, 2], [1]],
                                  [[29] * 8, [4, 4, 9, 4, 9], [6, 5, 1], [8, 27, 1, 1, 1, 1]],
                                  [[1, 2, 2], [1, 2], [2, 1, 1, 3], [3, 3, 1, 2]]])
def test_backward_merge_of_gradient_rows(bags):
    """Items are the bags' gradient rows and members the distinct rows: the merged gradients
    equal the golden model's (backward by rows: one row group, bags in bag order), with one
    operation per node of the gradient trie."""
    batch = one_table(bags)
    rng = np.random.default_rng(7)
    D = 3
    G = rng.standard_normal((len(bags), D)).astype(np.float32)
    plan = plan_part(batch, partition(batch, PartLimits.unlimited())[0], "sum", group=(1, 0))
    n = len(plan.rows)
    for share, mode in ((1, "refree"), (0, "dedup")):
        stream = run_scheduler(gradient_stream(plan, share), n, share)
        got = replay(stream, list(range(len(bags))), G, D, n)
        ops = [op for op in stream if not op["final"]]
        # the golden merged gradient: lr = -1 on a zero table leaves exactly g
        E0 = np.zeros((int(plan.rows.max()) + 1, D), np.float32)
        want = step([E0], batch, np.ascontiguousarray(G), -1.0, mode=mode).tables[0][plan.rows]
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), mode
        if share:
            assert len(ops) == plan.bwd_trie.num_nodes


def test_dedup_takes_a_member_a_cycle():
    """``dedup`` without repeats: an operation every cycle from the first to the last, over
    item boundaries and with a bag that is the last member of one item and the first of the
    next (its class entry read through the write of its first operation)."""
    bags = [[0, 1, 2], [1, 2], [0, 3], [2, 3, 4], [4], [0, 4]]
    plan = plan_part(one_table(bags), partition(one_table(bags), PartLimits.unlimited())[0], "sum")
    stream = member_stream(plan, share=0)
    assert any(a["member"] == b["member"] and b["first"] for a, b in zip(stream, stream[1:]))
    cycles = []
    ops = run_scheduler(stream, len(bags), 0, early=False, cycles=cycles)
    op_cycles = [c for op, c in zip(ops, cycles) if not op["final"]]
    assert len(op_cycles) == len(stream)
    assert op_cycles == list(range(op_cycles[0], op_cycles[0] + len(stream)))
    assert [op["src_zero"] for op in ops if not op["final"]] == \
        [int(x["member"] not in {y["member"] for y in stream[:k]}) for k, x in enumerate(stream)]


def test_refree_takes_a_member_a_cycle_across_items():
    """``refree``, items of one bag each (as most rows of the Meta-calibrated trace): a new
    class, so an operation, every cycle from the first to the last, over item boundaries,
    with a bag that is an item's member and the next item's (its class read before it moved,
    and counted as it joins), and one that comes back two items later."""
    bags = [[0, 2, 4], [1, 3], [5], [6, 7, 8]]
    plan = plan_part(one_table(bags), partition(one_table(bags), PartLimits.unlimited())[0], "sum")
    stream = member_stream(plan, share=1)
    assert all(x["first"] for x in stream)
    members = [x["member"] for x in stream]
    assert any(a == b for a, b in zip(members, members[1:]))
    assert any(a == c != b for a, b, c in zip(members, members[1:], members[2:]))
    cycles = []
    ops = run_scheduler(stream, len(bags), 1, early=False, cycles=cycles)
    op_cycles = [c for op, c in zip(ops, cycles) if not op["final"]]
    assert len(op_cycles) == len(stream)
    assert op_cycles == list(range(op_cycles[0], op_cycles[0] + len(stream)))
    check(bags, 9)


@pytest.mark.parametrize("seed", range(12))
def test_refree_items_back_to_back_with_conflicts(seed):
    """Many short items, repeated rows (coefficients that conflict, so deferred rounds with
    the next item's first member already taken) and consecutive items sharing bags, with
    and without output backpressure, after a warm-up part."""
    rng = np.random.default_rng(100 + seed)
    bags = [list(rng.integers(0, 10, rng.integers(0, 6))) for _ in range(int(rng.integers(4, 14)))]
    first = one_table([list(rng.integers(0, 10, 3)) for _ in range(8)])
    warm = plan_part(first, partition(first, PartLimits.unlimited())[0], "sum")
    check(bags, 10, seed, ops_stall=(0, 2, 5)[seed % 3], warmup=warm if seed % 2 else None)
