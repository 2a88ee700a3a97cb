"""The analyzer (distinct rows, pairs, row order, partition by distinct rows) against the
golden planner, in Amaranth's simulator."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.arith import canonical_nan
from refree.golden.planner import PartLimits, partition, plan_part
from refree.hw.engine.analyzer import Analyzer
from refree.hw.engine.params import EngineParams
from refree.hw.engine.sorter import radix_walks

from test_golden_planner import one_table

SMALL = EngineParams(index_width=16, max_bags=16, max_lookups=64, max_distinct_rows=12,
                     max_bag_len=8, radix_bits=3)


MAX_CYCLES = 100_000


async def feed_lookup(ctx, dut, row, bag, weight=0x3F800000):
    """Offer one lookup and wait until the analyzer takes it; return the cycles waited."""
    ctx.set(dut.lookups.payload.row, int(row))
    ctx.set(dut.lookups.payload.bag, bag)
    ctx.set(dut.lookups.payload.weight, weight)
    ctx.set(dut.lookups.valid, 1)
    for waited in range(MAX_CYCLES):
        if ctx.get(dut.lookups.ready):
            await ctx.tick()
            return waited
        await ctx.tick()
    raise AssertionError("the analyzer stopped taking lookups")


MEMBER_FIELDS = ("slot", "row", "bags", "bag", "mult", "c", "first", "upd", "member_last")


def run_analyzer(params, bags, stall_every=0, backward=False, weights=None, split=False,
                 skip_updates=False, partition_only=False):
    """Feed a table's bags as the controller would (bags/lookups limits checked here, the
    distinct-row limit by the analyzer), taking members all along (backward streams them
    during the insertion); return per part: bag range, order, pairs, counts, the rows
    announced on ``discovered`` and the values ``committed`` took, the cycle (from
    ``finish``; negative before it) each member was taken in and the one ``busy`` fell in.
    ``weights``: per bag, the float32 weight of each lookup (``weighted`` on)."""
    dut = Analyzer(params)
    parts, discovered, committed = [], [], []
    taking = {"members": None, "taken_at": None, "cycle": 0}

    async def consumer(ctx):
        """Take members (with backpressure when ``stall_every``), into the current part."""
        while True:
            take = taking["members"] is not None and not (stall_every and taking["cycle"] % stall_every == 0)
            ctx.set(dut.members.ready, take)
            await ctx.delay(1e-9)           # (the bench's inputs of this cycle are set)
            if take and ctx.get(dut.members.valid):
                taking["members"].append({k: ctx.get(getattr(dut.members.payload, k)) for k in MEMBER_FIELDS})
                taking["taken_at"].append(taking["cycle"])
            await ctx.tick()
            taking["cycle"] += 1

    async def monitor(ctx):
        async for _, _, start, valid, slot, row, c in ctx.tick().sample(
                dut.start, dut.discovered.valid, dut.discovered.slot, dut.discovered.row, dut.committed):
            if start:
                discovered.append([])
                committed.append([])
            elif discovered:
                if valid:
                    discovered[-1].append((slot, row))
                committed[-1].append(c)

    async def bench(ctx):
        b0 = 0
        while b0 < len(bags):
            ctx.set(dut.start, 1)
            ctx.set(dut.backward, backward)
            ctx.set(dut.skip_updates, skip_updates)
            ctx.set(dut.weighted, weights is not None)
            ctx.set(dut.split, split)
            ctx.set(dut.partition_only, partition_only)
            members, taken_at = [], []
            taking.update(members=members, taken_at=taken_at)
            await ctx.tick()
            ctx.set(dut.start, 0)
            b, lookups, full = b0, 0, False
            while b < len(bags) and b - b0 < params.max_bags and lookups + len(bags[b]) <= params.max_lookups:
                for k, r in enumerate(bags[b]):
                    await feed_lookup(ctx, dut, r, b - b0, 0x3F800000 if weights is None else
                                      int(np.float32(weights[b][k]).view(np.uint32)))
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
            finish_at = taking["cycle"]
            while ctx.get(dut.busy):
                assert taking["cycle"] - finish_at < MAX_CYCLES, "the analyzer did not finish"
                await ctx.tick()
            cycle = taking["cycle"] - finish_at
            await ctx.tick()                    # (the consumer sees the last member taken)
            taking["members"] = None
            taken_at[:] = [c - finish_at for c in taken_at]
            end = b0 + ctx.get(dut.full_bag) if ctx.get(dut.full) else b
            parts.append(dict(bags=(b0, end), members=members, taken_at=taken_at, idle_at=cycle,
                              rows=ctx.get(dut.num_rows), lookups=ctx.get(dut.num_lookups),
                              pairs=ctx.get(dut.num_pairs)))
            b0 = end
        await ctx.tick().repeat(2)              # (the monitor sees the last part's end)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(monitor)
    sim.add_testbench(consumer, background=True)
    sim.add_testbench(bench)
    sim.run()
    for part, found, seen in zip(parts, discovered, committed):
        part["discovered"], part["committed"] = found, seen
    return parts


def check_discovered(got, slot_of):
    """Every slot announced once, in slot order, with its row (those of a bag rolled back
    after it, numbered from the part's rows on); ``committed`` never counts a slot that
    does not stay, grows only, and ends at the part's rows."""
    rows = got["rows"]
    assert got["discovered"][:rows] == [(k, r) for r, k in slot_of.items()]
    assert [s for s, _ in got["discovered"][rows:]] == list(range(rows, len(got["discovered"])))
    seen = got["committed"]
    assert max(seen) <= rows and seen == sorted(seen) and seen[-1] == rows


def check(params, bags, **kw):
    check_backward(params, bags, **kw)
    check_backward(params, bags, skip_updates=True, **kw)
    return check_forward(params, bags, **kw)


def fold_bits(ws):
    """docs/design.md's key coefficient: the left fold of the weights from the first one, each
    sum rounded to binary32 with a canonical NaN."""
    c = np.float32(ws[0])
    for w in ws[1:]:
        c = canonical_nan(np.float32(c + np.float32(w)))
    return int(np.float32(c).view(np.uint32))


def part_pairs(bags, part, weights, split):
    """Slots by first appearance, and per bag of the part (numbered from 0) its pairs in
    first-appearance order as (row, mult, c bits); with ``split`` every lookup is a pair."""
    slot_of, pairs = {}, {}
    for b in range(part.bag_lo, part.bag_hi):
        mine = pairs.setdefault(b - part.bag_lo, {})
        for k, r in enumerate(bags[b]):
            slot_of.setdefault(r, len(slot_of))
            w = 1.0 if weights is None else weights[b][k]
            mine.setdefault((r, k) if split else r, (r, []))[1].append(w)
    return slot_of, {b: [(r, len(ws), fold_bits(ws)) for r, ws in mine.values()] for b, mine in pairs.items()}


def mark_member_last(entries, member):
    """Set ``member_last`` on each member's last pair (forward: ``member`` "bag"); the
    update list's entries have none."""
    last = {e[member]: k for k, e in enumerate(entries) if not e["upd"]}
    for k, e in enumerate(entries):
        e["member_last"] = int(not e["upd"] and last[e[member]] == k)
    return entries


def members_of(got, weighted):
    """The analyzer's members; ``c`` only counts for a weighted part."""
    return [m if weighted else {k: v for k, v in m.items() if k != "c"} for m in got]


def check_backward(params, bags, weights=None, split=False, skip_updates=False, **kw):
    """Backward: pairs grouped by bag in bag order, a bag's pairs by first appearance; and
    every slot's row (the update list) after them, not at all with ``skip_updates``; no
    ``member_last``."""
    batch = one_table(bags)
    limits = PartLimits(params.max_bags, params.max_lookups, params.max_distinct_rows, params.max_bag_len)
    want = partition(batch, limits)
    got = run_analyzer(params, bags, backward=True, weights=weights, split=split, skip_updates=skip_updates, **kw)
    assert [p["bags"] for p in got] == [(p.bag_lo, p.bag_hi) for p in want]
    for g, part in zip(got, want):
        plan = plan_part(batch, part, "sum")
        slot_of, pairs = part_pairs(bags, part, weights, split)
        pairs = {b: ps for b, ps in pairs.items() if ps}
        want_members = [dict(slot=slot_of[r], row=r, bags=0, bag=b, mult=n, c=c, first=int(k == 0), upd=0)
                        for b in sorted(pairs) for k, (r, n, c) in enumerate(pairs[b])]
        updates = [dict(slot=k, row=r, bags=0, bag=0, mult=0, c=0, first=0, upd=1) for k, r in enumerate(slot_of)]
        updates = [] if skip_updates else updates
        want_members = [dict(e, member_last=0) for e in want_members + updates]
        want_members = members_of(want_members, weights is not None)
        got_members = members_of(g["members"], weights is not None)
        for x, y in zip(got_members, want_members):     # (the update list's c is not used)
            if y["upd"]:
                x.pop("c", None), y.pop("c", None)
        assert got_members == want_members
        assert g["rows"] == len(plan.rows)
        check_discovered(g, slot_of)


def check_forward(params, bags, weights=None, split=False, **kw):
    batch = one_table(bags)
    limits = PartLimits(params.max_bags, params.max_lookups, params.max_distinct_rows, params.max_bag_len)
    want = partition(batch, limits)
    got = run_analyzer(params, bags, weights=weights, split=split, **kw)
    assert [p["bags"] for p in got] == [(p.bag_lo, p.bag_hi) for p in want]
    for g, part in zip(got, want):
        plan = plan_part(batch, part, "sum")
        assert g["rows"] == len(plan.rows) and g["lookups"] == part.hi - part.lo
        # Expected members: rows in the golden row order, each row's bags ascending with
        # the row's pairs in the bag; slots numbered by first appearance.
        slot_of, pairs = part_pairs(bags, part, weights, split)
        want_members = []
        for r, nb in zip(plan.rows.tolist(), plan.row_bags.tolist()):
            mine = [(b, n, c) for b in sorted(pairs) for rr, n, c in pairs[b] if rr == r]
            want_members += [dict(slot=slot_of[r], row=r, bags=nb, bag=b, mult=n, c=c, first=int(k == 0),
                                  upd=0)
                             for k, (b, n, c) in enumerate(mine)]
        mark_member_last(want_members, "bag")
        assert members_of(g["members"], weights is not None) == members_of(want_members, weights is not None)
        assert g["pairs"] == len(want_members)
        check_discovered(g, slot_of)
    return got


def random_weights(rng, bags):
    """float32 weights with repeats, zeros, negatives, a NaN payload and an infinity."""
    pool = np.array([0.5, -1.25, 0.0, -0.0, 3.0, 1e-40, np.inf, 0.1],
                    np.float32).tolist() + [np.uint32(0x7FC00123).view(np.float32)]
    return [[pool[i] if rng.random() < 0.4 else np.float32(rng.standard_normal())
             for i in rng.integers(0, len(pool), len(bag))] for bag in bags]


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


@pytest.mark.parametrize("split", [False, True])
def test_weighted_pairs_fold_their_weights(split):
    # Rows repeated inside a bag, back to back and a few lookups apart, so that a pair's
    # next weight arrives while its previous sum is still in the adder (it must wait).
    rng = np.random.default_rng(11)
    bags = [[3, 3, 3, 5, 3], [5, 7, 5, 5, 7, 3], [], [7], [3, 9, 11, 9, 3, 3, 3]] + \
           [list(rng.integers(0, 30, rng.integers(0, 8))) for _ in range(25)]
    check(SMALL, bags, weights=random_weights(rng, bags), split=split)


def test_split_pairs_roll_back_with_the_bag():
    # Bags with repeated rows close parts on the distinct-row limit: the rolled-back bag's
    # several pairs of one slot must remove the slot once and the bag once.
    rng = np.random.default_rng(5)
    # (each row twice in a row: a bag that overflows has already put two pairs of a slot
    # it created, or of a slot it shares, before the row that does not fit)
    bags = [list(np.repeat(rng.integers(0, 25, rng.integers(1, 5)), 2)) for _ in range(24)]
    # and one by hand: bag 2 overflows at row 40 after two pairs each of shared rows 0, 1
    bags = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [0, 0, 1, 1, 40, 40], [1, 5]] + bags
    got = check(SMALL, bags, weights=random_weights(rng, bags), split=True)
    assert len(got) > 2


@pytest.mark.parametrize("weighted", [False, True])
def test_one_lookup_per_cycle(weighted):
    """docs/design.md section 5: the analyzer takes a lookup every cycle (rows here never collide
    in the hash table; a weighted pair recurring within the adder's latency would wait, and
    none does here)."""
    params = EngineParams(index_width=16, max_bags=16, max_lookups=128, max_distinct_rows=64,
                          max_bag_len=16, radix_bits=4)
    rng = np.random.default_rng(2)
    bags = [list(rng.permutation(40)[:int(rng.integers(1, 12))]) for _ in range(16)]
    lookups = [(r, b) for b, bag in enumerate(bags) for r in bag]
    dut = Analyzer(params)
    taken = []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        ctx.set(dut.weighted, weighted)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle = 0
        for r, b in lookups:
            cycle += await feed_lookup(ctx, dut, r, b, 0x3F000000)
            taken.append(cycle)
            cycle += 1
        ctx.set(dut.lookups.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert taken == list(range(taken[0], taken[0] + len(lookups)))


@pytest.mark.parametrize("top", [1, 1 << 16], ids=["all-row-0", "full-width"])
def test_sort_passes_skipped_or_not(top):
    # The sort skips a radix pass whose digit is the same for every row: all of them when
    # every row is 0, none of the row passes when rows use all 16 bits.
    rng = np.random.default_rng(top)
    bags = [list(rng.integers(0, top, rng.integers(0, 6))) for _ in range(20)]
    bags[3] = [top - 1, 0, top - 1]
    check(SMALL, bags)


def test_partition_only_gives_the_parts_and_no_lists():
    """``partition_only`` (baseline, Adagrad's check): the same parts, counts and discovered
    rows, no member lists, and idle a few cycles after the last lookup, with no sort."""
    rng = np.random.default_rng(3)
    bags = [list(rng.integers(0, 40, rng.integers(0, 8))) for _ in range(30)]
    full = run_analyzer(SMALL, bags)
    for backward in (False, True):
        got = run_analyzer(SMALL, bags, backward=backward, partition_only=True)
        # (``committed`` is not compared: no prefetch follows a part formed this way)
        keys = ("bags", "rows", "lookups", "pairs", "discovered")
        assert [{k: g[k] for k in keys} for g in got] == [{k: f[k] for k in keys} for f in full]
        assert all(g["members"] == [] for g in got)
        # idle after the rollback (if any), without the sort and the lists
        assert all(g["idle_at"] + 10 <= f["idle_at"] for g, f in zip(got, full))


def test_member_lists_stream_a_pair_a_cycle():
    """The member lists leave at one pair a cycle, a row's first pair right after the previous
    row's last (rows of one pair and of several, the consumer always ready)."""
    params = EngineParams(index_width=16, max_bags=16, max_lookups=128, max_distinct_rows=64,
                          max_bag_len=16, radix_bits=4)
    rng = np.random.default_rng(4)
    bags = [list(rng.permutation(60)[:int(rng.integers(1, 10))]) for _ in range(16)]
    got = check_forward(params, bags)[0]
    rows = sum(m["first"] for m in got["members"])
    assert rows > 30 and len(got["members"]) > rows        # both kinds of rows
    t = got["taken_at"]
    assert t == list(range(t[0], t[0] + len(t)))



def test_the_sort_walks_once_per_pass_after_the_first():
    """The sort's first pass (the rows' lowest digit) is built while the slots are created;
    each later pass is one walk over the rows.  Rows over all 18 bits in 6-bit digits: two
    more row passes and the bag-count pass; from ``finish`` to the first member, three walks
    of the 144 rows and a few cycles each (the counting sort before took a counting walk,
    four scatters and a walk of the digits met: about 5 x 144 + 64)."""
    params = EngineParams(index_width=18, max_bags=16, max_lookups=256, max_distinct_rows=256,
                          max_bag_len=16, radix_bits=6)
    rng = np.random.default_rng(5)
    rows = rng.permutation(1 << 18)[:150]
    bags = [list(rows[k * 9:(k + 1) * 9]) + [int(rows[k])] * (k % 2) for k in range(16)]
    got = check_forward(params, bags)
    assert len(got) == 1
    n = got[0]["rows"]
    assert n == 144
    assert radix_walks(18, params.bag_count_bits, 6) == 3      # (row digits 1 and 2; the bag count)
    assert got[0]["taken_at"][0] <= 3 * n + 60


def test_backward_pairs_stream_beside_the_insertion():
    """Backward: a bag's pairs leave as soon as the bag is complete, while the later bags
    are still being inserted: with a lookup a cycle in (4 a bag), the pairs trail the
    insertion by the pipeline's depth (about 20 cycles: the next bag's first pair, the
    coefficient's adder, the reads), so every bag but the last six is out before
    ``finish``, and the part is over about 20 cycles after it, not a pair a cycle later."""
    rng = np.random.default_rng(3)
    bags = [list(rng.integers(0, 10, 4)) for _ in range(14)]
    check_backward(SMALL, bags, skip_updates=True)
    (part,) = run_analyzer(SMALL, bags, backward=True, skip_updates=True)
    before = [m["bag"] for m, t in zip(part["members"], part["taken_at"]) if t < 0]
    assert set(before) >= set(range(len(bags) - 6)), before
    assert part["idle_at"] <= 30


def run_chunks(params, chunks, skip_updates=True):
    """Backward by rows: one part (a row group) fed in ``chunks`` (lists of bags, each
    chunk's bags numbered from 0), ``chunk_end`` after each but the last, ``finish`` after
    it; returns each chunk's members, taken as they come (during the chunk's insertion
    too), and whether any came before its chunk's end."""
    dut = Analyzer(params)
    out, early = [[]], [False]
    fields = ("slot", "row", "bag", "mult", "first", "upd")

    async def monitor(ctx):
        async for _, _, valid, ready, *payload in ctx.tick().sample(
                dut.members.valid, dut.members.ready, *[getattr(dut.members.payload, f) for f in fields]):
            if valid and ready:
                out[-1].append(dict(zip(fields, payload)))

    async def bench(ctx):
        ctx.set(dut.start, 1)
        ctx.set(dut.backward, 1)
        ctx.set(dut.skip_updates, skip_updates)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.members.ready, 1)
        for k, bags in enumerate(chunks):
            for b, bag in enumerate(bags):
                for r in bag:
                    await feed_lookup(ctx, dut, r, b)
            ctx.set(dut.lookups.valid, 0)
            early[0] |= bool(out[-1])
            last = k == len(chunks) - 1
            ctx.set(dut.finish if last else dut.chunk_end, 1)
            await ctx.tick()
            ctx.set(dut.finish if last else dut.chunk_end, 0)
            for _ in range(MAX_CYCLES):
                if (not ctx.get(dut.busy)) if last else ctx.get(dut.chunk_done):
                    break
                await ctx.tick()
            else:
                raise AssertionError("the chunk's lists did not end")
            await ctx.tick()                    # (the monitor sees the last member)
            if not last:
                out.append([])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(monitor)
    sim.add_testbench(bench)
    sim.run()
    return out, early[0]


@pytest.mark.parametrize("skip_updates", [True, False])
def test_a_row_group_in_chunks(skip_updates):
    """Backward by rows: each chunk's pairs by bag in bag order, by the chunk's end; the
    slots go on over the chunks (a row keeps its slot), a chunk's bag numbers start at 0
    again without joining an earlier chunk's pair of the same row and number; the update
    list, every slot once, after the last chunk."""
    rng = np.random.default_rng(12)
    chunks = [[list(rng.integers(0, 9, rng.integers(0, 5))) for _ in range(int(rng.integers(1, 6)))]
              for _ in range(4)]
    chunks[1][0], chunks[2][0] = [3, 3, 4], [3, 5]          # row 3 in bag 0 of two chunks
    got, _ = run_chunks(SMALL, chunks, skip_updates)
    slot_of = {}
    for bags in chunks:
        for bag in bags:
            for r in bag:
                slot_of.setdefault(int(r), len(slot_of))
    for k, (bags, members) in enumerate(zip(chunks, got)):
        want = []
        for b, bag in enumerate(bags):
            rows = list(dict.fromkeys(int(r) for r in bag))
            want += [dict(slot=slot_of[r], row=r, bag=b, mult=[int(x) for x in bag].count(r), first=int(i == 0),
                          upd=0) for i, r in enumerate(rows)]
        if k == len(chunks) - 1 and not skip_updates:
            want += [dict(slot=s, row=r, bag=0, mult=0, first=0, upd=1) for r, s in slot_of.items()]
        assert members == want, k
