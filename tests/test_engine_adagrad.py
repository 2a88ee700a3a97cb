"""The engine's row-wise Adagrad unit (rows pipelined through the squares and the update on
P lanes and a scalar pipeline; the state beat read-modify-written, or chained from the row
before) against the golden model's Adagrad, in Amaranth's simulator, with gaps on the
inputs and backpressure on the output; its throughput; its parameter checks."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.golden.arith import canonical_nan
from refree.golden.model import _adagrad
from refree.hw.engine.adagrad import AdagradUnit


def beats(a):
    """float32 rows (n, 16k) -> per row, its k beats as ints."""
    return [[int.from_bytes(b.astype("<f4").tobytes(), "little") for b in row.reshape(-1, 16)] for row in a]


def unbeat(v):
    return np.frombuffer(v.to_bytes(64, "little"), "<f4")


def run_unit(dut, rows, g, e, state, lr, eps, gaps=(3, 2), stall_out=3):
    """Feed the rows (g and E beats, the state beat read after the previous update of that
    beat was written, as the engine does) and collect the output; returns (outputs, cycles
    from the first input to the last output)."""
    n, dim = g.shape
    out, clock = [], {"now": 0, "first": None, "last": None}

    async def feed(ctx, stream, items, gap, setter):
        for k, v in enumerate(items):
            if gap and k % gap == 0:
                await ctx.tick()
            setter(ctx, v)
            ctx.set(stream.valid, 1)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    def state_beat(r, s):
        return int.from_bytes(s[16 * (r // 16):16 * (r // 16) + 16].astype("<f4").tobytes(), "little")

    async def bench_g(ctx):
        ctx.set(dut.lr, int(lr.view(np.uint32)))
        ctx.set(dut.eps, int(eps.view(np.uint32)))
        await feed(ctx, dut.g, [b for row in beats(g) for b in row], gaps[0], lambda c, v: c.set(dut.g.payload, v))

    async def bench_e(ctx):
        await feed(ctx, dut.e, [b for row in beats(e) for b in row], gaps[1], lambda c, v: c.set(dut.e.payload, v))

    async def bench_state(ctx):
        # as the engine does: a row whose state beat is the previous row's goes at once,
        # chained (its beat may be stale); another waits for the last update of its beat
        s = state.copy()
        for i, r in enumerate(rows):
            chained = bool(i > 0 and rows[i - 1] // 16 == r // 16)
            same = [x for x in range(i) if rows[x] // 16 == r // 16]
            while same and not chained and len([o for o in out if o[1]]) <= same[-1]:
                await ctx.tick()
            if same and not chained:    # the beat as the last update of it wrote it
                s[16 * (r // 16):16 * (r // 16) + 16] = unbeat([o for o in out if o[1]][same[-1]][0])
            def set_state(c, v, r=r, s=s.copy(), chained=chained):
                c.set(dut.state.payload.beat, state_beat(r, s))
                c.set(dut.state.payload.lane, int(r % 16))
                c.set(dut.state.payload.chained, chained)
            await feed(ctx, dut.state, [0], 0, set_state)

    async def collect(ctx):
        while len(out) < n * (dim // 16 + 1):
            ctx.set(dut.out.ready, not stall_out or clock["now"] % stall_out != 0)
            await ctx.tick()
            assert clock["now"] < 200 * n * dim, "the Adagrad unit stopped"

    async def sample(ctx):
        async for _, _, valid, ready, payload, g_valid in ctx.tick().sample(
                dut.out.valid, dut.out.ready, dut.out.payload, dut.g.valid):
            clock["now"] += 1
            if g_valid and clock["first"] is None:
                clock["first"] = clock["now"]
            if valid and ready:
                out.append((payload.data, payload.state, payload.last))
                clock["last"] = clock["now"]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in (bench_g, bench_e, bench_state, collect):
        sim.add_testbench(bench)
    sim.add_process(sample)
    sim.run()
    return out, clock["last"] - clock["first"]


def golden(rows, g, e, state, lr, eps):
    want_e, want_s = e.copy(), state.copy()
    for i, r in enumerate(rows):                        # one row at a time, as the engine does
        E, st = want_e[i:i + 1], want_s[r:r + 1]
        _adagrad(E, st, np.array([0]), g[i:i + 1], lr, eps)
        want_e[i], want_s[r] = E[0], st[0]
    return want_e, want_s


@pytest.mark.parametrize("dim,lanes,n,ring,group", [(16, 4, 5, 32, 16), (32, 16, 5, 32, 16), (64, 4, 40, 32, 16),
                                                    (48, 1, 12, 4, 3), (32, 8, 24, 8, 8), (16, 2, 30, 16, 5)])
def test_rows_and_state_beats_match_the_golden_adagrad(dim, lanes, n, ring, group):
    rng = np.random.default_rng(dim + n)
    rows = rng.choice(16 * n, size=n, replace=False)
    # rows sharing a state beat: 17 and 18 in a row (chained), 3 and 5 apart, a run of four
    rows[:min(n, 9)] = [3, 17, 18, 40, 5, 64, 65, 66, 67][:min(n, 9)]
    g = rng.standard_normal((n, dim)).astype(np.float32)
    e = rng.standard_normal((n, dim)).astype(np.float32)
    g[1, :3] = [0.0, -0.0, 1e-42]
    g[3] = 0                                            # state unchanged, m = lr / (sqrt + eps)
    state = np.abs(rng.standard_normal(16 * n + 16)).astype(np.float32)
    state[5] = 0
    lr, eps = np.float32(0.05), np.float32(1e-8)
    want_e, want_s = golden(rows, g, e, state, lr, eps)
    out, _ = run_unit(AdagradUnit(dim, lanes, ring=ring, group=group), rows, g, e, state, lr, eps,
                      gaps=(3, 2) if n < 20 else (0, 5))
    per_row = dim // 16 + 1
    for i, r in enumerate(rows):
        mine = out[i * per_row:(i + 1) * per_row]
        assert [(s, l) for _, s, l in mine] == [(0, 0)] * (per_row - 1) + [(1, 1)]
        got_e = np.concatenate([unbeat(d) for d, _, _ in mine[:-1]])
        assert np.array_equal(got_e.view(np.uint32), canonical_nan(want_e[i]).view(np.uint32)), f"row {i}"
        got_s = unbeat(mine[-1][0])
        # the other lanes of the state beat: as read (states of rows updated before in it)
        lo = 16 * (r // 16)
        done = set(rows[:i + 1].tolist())
        expect = np.array([want_s[x] if x in done else state[x] for x in range(lo, lo + 16)], np.float32)
        assert np.array_equal(got_s.view(np.uint32), canonical_nan(expect).view(np.uint32)), f"row {r}"


def test_a_row_every_two_d_over_p_cycles():
    """With rows waiting and the output ready, the unit takes a row every 2 D / P cycles
    (its lanes' work: the squares and the update), plus one row's latency, also when
    consecutive rows share their state beat (chained): the engine's default D = 64, P = 4:
    32 cycles a row (one row at a time took over 400)."""
    dim, lanes, n = 64, 4, 64
    rng = np.random.default_rng(7)
    rows = np.arange(n)                                 # sixteen in a row share a state beat
    g = rng.standard_normal((n, dim)).astype(np.float32)
    e = rng.standard_normal((n, dim)).astype(np.float32)
    state = np.abs(rng.standard_normal(16 * n)).astype(np.float32)
    lr, eps = np.float32(0.01), np.float32(1e-8)
    out, cycles = run_unit(AdagradUnit(dim, lanes), rows, g, e, state, lr, eps, gaps=(0, 0), stall_out=0)
    want_e, _ = golden(rows, g, e, state, lr, eps)
    got = np.stack([np.concatenate([unbeat(d) for d, _, _ in out[i * 5:i * 5 + 4]]) for i in range(n)])
    assert np.array_equal(got.view(np.uint32), canonical_nan(want_e).view(np.uint32))
    latency = 700
    assert cycles <= n * 2 * dim // lanes * 1.1 + latency, cycles
    print(f"{n} rows in {cycles} cycles")


@pytest.mark.parametrize("kwargs", [dict(ring=2), dict(ring=24), dict(ring=8, group=9), dict(lanes=3),
                                    dict(dim=24)])
def test_parameters_out_of_range_are_refused(kwargs):
    args = dict(dim=64, lanes=4) | kwargs
    with pytest.raises(ValueError):
        AdagradUnit(args.pop("dim"), args.pop("lanes"), **args)
