# amaranth: UnusedElaboratable=no
"""The fold datapath in Amaranth's simulator: random operation programs with hazards,
recycled classes and special values, with gaps on every input and backpressure on the
results, bit for bit against a numpy replay; one beat per cycle without hazards; and the
sharing scheduler and the datapath together against the golden model's pooled output.

Amaranth's simulator runs the 16 FMA lanes at some tens of cycles per second, so the
programs are short and each simulation runs several parts (``start`` between them)."""
import gc

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from refree.golden.arith import canonical_nan, fma
from refree.golden.model import step
from refree.golden.planner import PartLimits, partition, plan_part
from refree.hw.engine.datapath import LANES, FoldDatapath
from refree.hw.engine.scheduler import ShareScheduler
from refree.hw.fp.fma import FusedMultiplyAdd

from refree.verif.fold_harness import feed_part, member_stream
from test_golden_planner import one_table

MAX_CYCLES = 5_000

SPECIALS = np.array([0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000,
                     0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00001, 0x7F7FFFFF,
                     0xFF7FFFFF, 0x3F800000, 0xBF800000, 0x7F000000], np.uint32)
COEFS = [0x3F800000] * 6 + [0x40000000, 0x40400000, 0xBF000000, 0x00000000, 0x80000000,
                            0x7F800000, 0x7FC00000, 0x00000003, 0x71000000, 0x0DA24260]


def f32(u):
    return np.asarray(u, np.uint32).view(np.float32)


def random_rows(rng, n, dim):
    """Row values biased to the hard cases: specials, subnormals, huge and cancelling values."""
    mant = rng.integers(0, 1 << 23, (n, dim), dtype=np.uint32)
    exp = np.clip(rng.normal(127, 30, (n, dim)), 0, 254).astype(np.uint32)
    exp[rng.random((n, dim)) < 0.1] = 0                              # subnormals
    exp[rng.random((n, dim)) < 0.1] = rng.integers(250, 255)          # overflow territory
    sign = (rng.random((n, dim)) < 0.5).astype(np.uint32)
    x = (sign << 31) | (exp << 23) | mant
    near = rng.random((n, dim)) < 0.25                                # near-cancelling values
    x[near] = (f32(0x3F800000 + rng.integers(0, 8, near.sum())) *
               rng.choice([1, -1], near.sum())).astype(np.float32).view(np.uint32)
    spec = rng.random((n, dim)) < 0.12
    x[spec] = rng.choice(SPECIALS, spec.sum())
    return x


def random_program(rng, num_classes, n_ops, n_members, kinds=(0,), p_chain=0.45):
    """Operations as a scheduler could emit them: fresh or recycled ``dst`` (a class just read
    is soon written again), chains that read the previous operation's ``dst``, in-place
    updates (``dst == src``, as ``dedup``) and ``src_zero`` starts; then the finals."""
    free = list(rng.permutation(num_classes))
    live, ops, item = [], [], -1
    for i in range(n_ops):
        item_first = int(i == 0 or rng.random() < 0.4)
        item += item_first
        r = rng.random()
        if ops and r < p_chain:
            src, src_zero = ops[-1]["dst"], 0
        elif live and r < 0.8:
            src, src_zero = int(rng.choice(live)), 0
        else:
            src, src_zero = int(rng.integers(num_classes)), 1     # src must be ignored
        if (not src_zero and rng.random() < 0.2) or not free and not src_zero:
            dst = src
        elif free:
            dst = int(free.pop(0))
        else:
            dst = int(rng.choice(live))
        if not src_zero and dst != src and rng.random() < 0.4:   # the class's last member left
            live.remove(src)
            free.insert(0, src)
        if dst in free:
            free.remove(dst)
        if dst not in live:
            live.append(dst)
        c = int(rng.choice(COEFS)) if rng.random() < 0.7 else int(random_rows(rng, 1, 1)[0, 0])
        ops.append(dict(dst=dst, src=src, src_zero=src_zero, item=item, item_first=item_first,
                        c=c, kind=int(rng.choice(kinds))))
    finals = []
    for k in range(n_members):
        zero = int(rng.random() < 0.15)
        node = ops[-1]["dst"] if k == 0 else int(rng.choice(live))   # the first final: a hazard
        finals.append(dict(member=k, node=node, zero=zero))
    return ops, finals, item + 1


def signed_zero_part(dim):
    """Kind 1 where it differs from an FMA with a +0 addend: products of zero or underflowing
    products (signed zeros) added to a -0 partial sum, and overflowing products."""
    tiny, ntiny = 0x0D800000, 0x8D800000              # +-2**-100: the product underflows
    lanes = [0x00000000, 0x80000000, ntiny, tiny, 0x3F800000, 0xBF800000, 0x80000001,
             0x00000001, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F7FFFFF, 0xFF7FFFFF,
             0x00800000, 0x80800000, 0x3F800001]
    rows = np.array([[ntiny] * dim, np.resize(lanes, dim)], np.uint32)
    op = dict(src=0, src_zero=0, item=1, item_first=0, kind=1)
    ops = [dict(dst=0, src=0, src_zero=1, item=0, item_first=1, c=tiny, kind=0),  # -0 sums
           dict(op, dst=1, c=tiny, item_first=1),
           dict(op, dst=2, c=0x80000000),
           dict(op, dst=3, c=tiny, kind=0),
           dict(op, dst=4, src=3, c=0x7F000000),
           dict(op, dst=5, src=0, src_zero=1, c=0x80000000)]
    finals = [dict(member=k, node=k, zero=0) for k in range(6)]
    return dict(ops=ops, finals=finals, rows=rows)


def write_after_write_part(dim):
    """The second operation waits for the first (read after write); the third writes the
    same class without reading it, so it must not pass the second."""
    ops = [dict(dst=1, src=0, src_zero=1, item=0, item_first=1, c=0x3F800000, kind=0),
           dict(dst=0, src=1, src_zero=0, item=0, item_first=0, c=0x3F800000, kind=0),
           dict(dst=0, src=0, src_zero=1, item=1, item_first=1, c=0x40000000, kind=0)]
    finals = [dict(member=k, node=k, zero=0) for k in range(2)]
    rows = np.full((2, dim), 0x3F800000, np.uint32)
    rows[1] = 0x40400000
    return dict(ops=ops, finals=finals, rows=rows)


def replay(ops, finals, rows, dim, lanes=LANES):
    """Expected result beats (of ``lanes`` lanes): the operations in numpy binary32, NaNs
    canonical."""
    PS, it, row = {}, iter(rows), None
    with np.errstate(all="ignore"):
        for op in ops:
            if op["item_first"]:
                row = f32(next(it))
            acc = np.zeros(dim, np.float32) if op["src_zero"] else PS[op["src"]]
            c = f32(op["c"])
            if op["kind"] == 1:
                v = canonical_nan(canonical_nan(c * row) + acc)
            else:
                v = canonical_nan(fma(c, row, acc))
            PS[op["dst"]] = v
    out = []
    for f in finals:
        v = np.zeros(dim, np.float32) if f["zero"] else PS[f["node"]]
        beats = v.view(np.uint32).reshape(-1, lanes)
        for j, b in enumerate(beats):
            out.append((f["member"], j, pack(b), int(j == len(beats) - 1)))
    return out


def pack(lanes):
    return sum(int(x) << (32 * k) for k, x in enumerate(lanes))


def unpack(word, lanes=LANES):
    return np.array([(word >> (32 * k)) & 0xFFFFFFFF for k in range(lanes)], np.uint32)


class Bench:
    """Drives ``parts`` (dicts with ``ops``, ``finals``, ``rows``: uint32 (items, D)) through a
    datapath: a part's finals, as finals in the operation stream, after its last operation;
    the next part once the part's results are all out and the datapath idle (``start``
    between parts, ``error`` read before it); rows streamed ahead independently; random
    gaps and result backpressure.  Cycles are read from a free-running counter sampled at
    each clock edge."""

    def __init__(self, dut, parts, *, gap=0.0, stall=0.0, seed=0):
        self.dut, self.parts, self.gap, self.stall = dut, parts, gap, stall
        self.rng = np.random.default_rng(seed)
        self.counter = Signal(32)
        self.results_due = 0                     # result beats of the parts sent so far
        self.op_cycles = []                      # acceptance cycle of every operation
        self.errors = []                         # `error` at the end of each part
        self.results = []
        self.result_cycles = []

    def idle(self):
        return self.gap and self.rng.random() < self.gap

    async def tick(self, ctx, *values):
        _, _, cycle, *got = await ctx.tick().sample(self.counter, *values)
        assert cycle < MAX_CYCLES, "the datapath did not finish"
        return cycle, *got

    async def wait(self, ctx, cond):
        while not cond():
            await self.tick(ctx)

    async def send(self, ctx, port, payload):
        """Present ``payload`` until taken (after random idle cycles); the cycle taken."""
        while self.idle():
            ctx.set(port.valid, 0)
            await self.tick(ctx)
        ctx.set(port.valid, 1)
        if isinstance(payload, dict) and port is self.dut.ops:
            payload = {"final": 0} | payload
        ctx.set(port.payload, payload)
        while True:
            cycle, ready = await self.tick(ctx, port.ready)
            if ready:
                return cycle

    async def drive_ops(self, ctx):
        dut = self.dut
        for p, part in enumerate(self.parts):
            if p:                               # the previous part done: its error, start
                await self.wait(ctx, lambda: len(self.results) == self.results_due and not ctx.get(dut.busy))
                self.errors.append(ctx.get(dut.error))
            ctx.set(dut.start, 1)
            await self.tick(ctx)
            ctx.set(dut.start, 0)
            self.results_due += len(part["finals"]) * dut.beats
            for op in part["ops"]:
                self.op_cycles.append(await self.send(ctx, dut.ops, op))
            for f in part["finals"]:
                await self.send(ctx, dut.ops, dict(dst=f["member"], src=f["node"], src_zero=f["zero"],
                                                   item=0, item_first=0, c=0, kind=0, final=1))
            ctx.set(dut.ops.valid, 0)
        await self.wait(ctx, lambda: len(self.results) == self.results_due)
        self.errors.append(ctx.get(dut.error))

    async def drive_rows(self, ctx):
        for part in self.parts:
            for row in part["rows"]:
                for beat in row.reshape(-1, self.dut.lanes):      # wide beats
                    await self.send(ctx, self.dut.rows, pack(beat))
        ctx.set(self.dut.rows.valid, 0)

    async def collect(self, ctx):
        res = self.dut.results
        n = sum(len(part["finals"]) for part in self.parts) * self.dut.beats
        while len(self.results) < n:
            ready = not (self.stall and self.rng.random() < self.stall)
            ctx.set(res.ready, ready)
            cycle, valid, member, beat, data, last = await self.tick(
                ctx, res.valid, res.payload.member, res.payload.beat, res.payload.data,
                res.payload.last)
            if valid and ready:
                self.results.append((member, beat, data, last))
                self.result_cycles.append(cycle)
        ctx.set(res.ready, 0)
        # Writes that no final reads may still be in flight (an operation started late by
        # the window); every one lands within L + 1 cycles.
        for _ in range(self.dut.latency):
            await self.tick(ctx)
            if not ctx.get(self.dut.busy):
                break
        assert not ctx.get(self.dut.busy), "busy L + 1 cycles after the last result"

    def run(self):
        top = Module()
        top.submodules.dut = self.dut
        top.d.sync += self.counter.eq(self.counter + 1)
        sim = Simulator(top)
        sim.add_clock(1e-8)
        for tb in (self.drive_ops, self.drive_rows, self.collect):
            sim.add_testbench(tb)
        sim.run()
        return self


def check_results(got, want, lanes=LANES):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g[0] == w[0] and g[1] == w[1] and g[3] == w[3], f"result {i}: {g[:2]} {w[:2]}"
        bad = np.nonzero(unpack(g[2], lanes) != unpack(w[2], lanes))[0]
        assert bad.size == 0, (f"result {i} (member {w[0]} beat {w[1]}) lanes {bad.tolist()}: "
                               f"got {[hex(x) for x in unpack(g[2], lanes)[bad]]} "
                               f"want {[hex(x) for x in unpack(w[2], lanes)[bad]]}")


# ---- arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(dim=0), r"^FoldDatapath dim must be a positive multiple of 16, not 0$"),
    (dict(dim=24), r"^FoldDatapath dim must be a positive multiple of 16, not 24$"),
    (dict(dim=16.0), r"^FoldDatapath dim must be a positive multiple of 16, not 16.0$"),
    (dict(lanes=24), r"^FoldDatapath lanes must be a positive multiple of 16, not 24$"),
    (dict(lanes=64), r"^FoldDatapath dim must be a positive multiple of 64, not 32$"),
    (dict(num_classes=0), r"^FoldDatapath num_classes must be a positive integer, not 0$"),
    (dict(node_bits=True), r"^FoldDatapath node_bits must be a positive integer, not True$"),
    (dict(item_bits=-1), r"^FoldDatapath item_bits must be a positive integer, not -1$"),
    (dict(kind_bits=0), r"^FoldDatapath kind_bits must be a positive integer, not 0$"),
    (dict(num_classes=9, node_bits=3),
     r"^FoldDatapath node_bits must number num_classes=9 classes \(at least 4\), not 3$"),
])
def test_arguments_are_checked(kwargs, message):
    args = dict(dim=32, num_classes=8, node_bits=3, item_bits=4) | kwargs
    with pytest.raises(ValueError, match=message):
        FoldDatapath(**args)


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_layouts_match_the_scheduler():
    sch = ShareScheduler(num_members=10, item_bits=7)
    dp = FoldDatapath.for_scheduler(sch, 64)
    assert (dp.Op, dp.num_classes, dp.beats) == (sch.Op, 13, 4)   # members + 3 (see ShareScheduler)
    assert dp.latency == dp.fma_latency + 1 == len(FusedMultiplyAdd.DEFAULT_PIPELINE) + 1
    assert FoldDatapath(16, 4, 2, 3, fma_pipeline=("round",)).latency == 2
    del dp
    gc.collect()                # the unused components warn here, not in a later test


# ---- random programs -------------------------------------------------------------------

@pytest.mark.parametrize("dim, lanes, kinds, fma_pipeline, gap, stall, seed", [
    (16, 16, (0,), None, 0.2, 0.3, 1),             # one beat a row: every chain stalls
    (48, 16, (0, 0, 1, 2), None, 0.25, 0.4, 2),    # three beats; kind 1 and a reserved kind
    (32, 16, (0, 1), ("pp", "round"), 0.1, 0.2, 3),  # a short FMA pipeline (L = 2)
    (64, 32, (0, 0, 1), None, 0.2, 0.3, 4),        # two memory beats a wide beat, two a row
    (64, 64, (0, 1), None, 0.2, 0.3, 5),           # the default: a whole row in one wide beat
])
def test_random_programs_with_hazards_gaps_and_backpressure(dim, lanes, kinds, fma_pipeline, gap,
                                                            stall, seed):
    rng = np.random.default_rng(seed)
    C = 6
    dut = FoldDatapath(dim, C, 3, 8, fma_pipeline=fma_pipeline, lanes=lanes)
    assert (dut.beats, dut.beat_bits) == (dim // lanes, 32 * lanes)
    parts = [write_after_write_part(dim)] + ([signed_zero_part(dim)] if 1 in kinds else [])
    want = [w for part in parts for w in replay(part["ops"], part["finals"], part["rows"], dim, lanes)]
    n_ops = {16: 26, 32: 14, 48: 10, 64: 8}[dim]
    for _ in range(2):
        ops, finals, items = random_program(rng, C, n_ops, 5, kinds)
        rows = random_rows(rng, items, dim)
        parts.append(dict(ops=ops, finals=finals, rows=rows))
        want += replay(ops, finals, rows, dim, lanes)
    bench = Bench(dut, parts, gap=gap, stall=stall, seed=seed).run()
    check_results(bench.results, want, lanes)
    reserved = [any(op["kind"] >= 2 for op in part["ops"]) for part in parts]
    assert bench.errors == reserved        # sticky within a part, cleared by start
    assert any(op["src"] == prev["dst"] and not op["src_zero"]
               for part in parts for prev, op in zip(part["ops"], part["ops"][1:]))


# ---- throughput --------------------------------------------------------------------------

def test_one_beat_per_cycle_without_hazards():
    """Operation i writes class i mod C and reads the class written L + 1 operations earlier
    (D = 16: one beat each), so nothing waits; an item every fourth operation.  Measured:
    the 48 operations are taken in 48 consecutive cycles; the first beat of a final that
    reads the last operation's result appears L + 2 cycles after that operation; finals
    then come one beat per cycle."""
    D, N = 16, 48
    L = len(FusedMultiplyAdd.DEFAULT_PIPELINE)
    C = max(16, L + 2)
    dut = FoldDatapath(D, C, (C - 1).bit_length(), 8)
    assert dut.fma_latency == L
    ops = [dict(dst=i % C, src=(i - L - 1) % C, src_zero=int(i < L + 1), item=i // 4,
                item_first=int(i % 4 == 0), c=0x3F800000 if i % 3 else 0x40400000, kind=0)
           for i in range(N)]
    finals = [dict(member=k, node=(N - 1 - k) % C, zero=0) for k in range(C)]
    rows = random_rows(np.random.default_rng(7), N // 4, D)
    bench = Bench(dut, [dict(ops=ops, finals=finals, rows=rows)]).run()
    check_results(bench.results, replay(ops, finals, rows, D))
    first = bench.op_cycles[0]
    assert bench.op_cycles == list(range(first, first + N))        # one beat per cycle
    # fill: two cycles through the window, then the hazard on the last dst
    assert bench.result_cycles[0] - bench.op_cycles[-1] == L + 4
    assert bench.result_cycles == list(range(bench.result_cycles[0],
                                             bench.result_cycles[0] + C))
    # whole run: beats + the documented fill
    assert bench.result_cycles[-1] - first + 1 == N + C + L + 3


def chains_program(chains, length):
    """``chains`` independent chains of ``length`` operations each, presented one chain after
    the other: each operation reads the partial sum the one before it in its chain wrote."""
    ops = []
    for c in range(chains):
        for i in range(length):
            n = c * length + i
            ops.append(dict(dst=n, src=n - 1 if i else 0, src_zero=int(i == 0), item=n,
                            item_first=1, c=0x3F800000 if n % 5 else 0xC0000000, kind=0))
    finals = [dict(member=c, node=c * length + length - 1, zero=0) for c in range(chains)]
    return ops, finals


@pytest.mark.parametrize("window", [1, 14])
def test_the_window_lets_independent_operations_pass_a_waiting_one(window):
    """Four chains of six operations at D = 16, chain after chain.  In order (window 1)
    every operation but the first of a chain waits for its predecessor: 20 (L + 1) cycles
    and more (measured 304).  With a window of 14 operations
    (enough to cover L + 1 = 14 cycles of one-beat operations) the chains
    interleave: no faster than one chain, 6 (L + 1) cycles, and measured 120 cycles from
    the first operation taken to the last result beat (the last chain enters the window
    only after 18 operations have left it)."""
    D, K, N = 16, 4, 6
    L = len(FusedMultiplyAdd.DEFAULT_PIPELINE)
    dut = FoldDatapath(D, K * N, (K * N - 1).bit_length(), 8, window=window)
    assert window in (1, L + 1) and dut.window == window
    ops, finals = chains_program(K, N)
    rows = random_rows(np.random.default_rng(3), K * N, D)
    bench = Bench(dut, [dict(ops=ops, finals=finals, rows=rows)]).run()
    check_results(bench.results, replay(ops, finals, rows, D))
    span = bench.result_cycles[-1] - bench.op_cycles[0] + 1
    if window == 1:
        assert span >= K * (N - 1) * (L + 1)
    else:
        assert N * (L + 1) <= span <= 120


# ---- scheduler and datapath together ---------------------------------------------------

class Pair(wiring.Component):
    """ShareScheduler feeding FoldDatapath, connected as the engine connects them."""

    def __init__(self, num_members, dim):
        self.sch = ShareScheduler(num_members=num_members, item_bits=8)
        self.dp = FoldDatapath.for_scheduler(self.sch, dim)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.sch, m.submodules.dp = self.sch, self.dp
        wiring.connect(m, self.sch.ops, self.dp.ops)
        return m


def test_scheduler_and_datapath_give_the_golden_pooled_output():
    """The worked example of docs/design.md and a random batch, in ``refree`` and ``dedup`` modes,
    one part after the other; rows stream from the table in item order, results with
    backpressure; compared with ``step(...).pooled`` bit for bit (sum pooling)."""
    D, N = 32, 12
    rng = np.random.default_rng(11)
    worked = [[5, 2, 0], [5, 2, 6], [5, 2], [1]]
    rand = [list(rng.zipf(1.5, rng.integers(0, 6)) % 10) for _ in range(N)]
    cases = [(worked, 8, 1), (rand, 10, 1), (rand, 10, 0)]
    pair = Pair(N, D)
    sch, dp = pair.sch, pair.dp
    plans, expected, tables = [], [], []
    for bags, nrows, share in cases:
        E = rng.standard_normal((nrows, D)).astype(np.float32)
        hard = rng.random(E.shape) < 0.3
        E[hard] = f32(random_rows(rng, nrows, D))[hard]
        batch = one_table(bags)
        plan = plan_part(batch, partition(batch, PartLimits.unlimited())[0], "sum")
        with np.errstate(all="ignore"):
            pooled = step([E], batch, np.zeros((len(bags), D), np.float32), 0.0,
                          mode="refree" if share else "dedup").pooled
        plans.append(plan)
        tables.append(E)
        expected.append(pooled)
    got = [dict() for _ in cases]
    done = [False] * len(cases)
    out_rng = np.random.default_rng(5)

    async def items(ctx):
        for p, ((bags, _, share), plan) in enumerate(zip(cases, plans)):
            if p:                               # the previous part delivered
                while not done[p - 1]:
                    await ctx.tick()
                await ctx.tick().until(~sch.busy & ~dp.busy)
            ctx.set(sch.share, share)
            ctx.set(sch.early, p != 1)          # finals as members complete, or at the end
            ctx.set(sch.num_members, len(bags))
            ctx.set(sch.start, 1)
            ctx.set(dp.start, 1)
            await ctx.tick()
            ctx.set(sch.start, 0)
            ctx.set(dp.start, 0)
            await feed_part(ctx, sch, member_stream(plan, share))

    async def rows(ctx):
        for plan, E in zip(plans, tables):
            for r in plan.rows.tolist():
                for beat in E[r].view(np.uint32).reshape(-1, LANES):
                    ctx.set(dp.rows.payload, pack(beat))
                    ctx.set(dp.rows.valid, 1)
                    await ctx.tick().until(dp.rows.ready)
        ctx.set(dp.rows.valid, 0)

    async def results(ctx):
        cycle = 0
        for p, (bags, _, _) in enumerate(cases):
            while len(got[p]) < len(bags) * dp.beats:
                cycle += 1
                assert cycle < 20_000, "no results"
                ready = out_rng.random() > 0.3
                ctx.set(dp.results.ready, ready)
                _, _, valid, member, beat, data = await ctx.tick().sample(
                    dp.results.valid, dp.results.payload.member, dp.results.payload.beat,
                    dp.results.payload.data)
                if valid and ready:
                    got[p][member, beat] = data
            done[p] = True
        ctx.set(dp.results.ready, 0)

    sim = Simulator(pair)
    sim.add_clock(1e-8)
    sim.add_testbench(items)
    sim.add_testbench(rows)
    sim.add_testbench(results)
    sim.run()
    for p, (bags, _, _) in enumerate(cases):
        pooled = np.array([np.concatenate([unpack(got[p][b, j]) for j in range(dp.beats)])
                           for b in range(len(bags))], np.uint32)
        want = expected[p].view(np.uint32)
        assert np.array_equal(pooled, want), (p, np.nonzero(pooled != want))
        assert np.isfinite(expected[p]).mean() > 0.5        # not only inf and NaN
