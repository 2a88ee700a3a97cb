"""The row store: beats (or words of 2 and 4 beats) back in fetch order (a FIFO), or by
(slot, beat) in any order once arrived, each with its word, its slot's write-back address plus
the beat; random gaps on both sides."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.engine.row_store import RowStore

MAX_CYCLES = 20_000


def run(store, parts, seed):
    """``parts``: (by_slot, wide, rows (n, beats) of ints, order of (slot, beat) or None, addrs).
    Returns per part the (data, beat_data, addr) of ``out`` in the order it gave them."""
    rng = np.random.default_rng(seed)
    got = []

    async def bench(ctx):
        for by_slot, wide, rows, order, addrs in parts:
            ctx.set(store.by_slot, by_slot)
            ctx.set(store.wide, wide)
            ctx.set(store.start, 1)
            await ctx.tick()
            ctx.set(store.start, 0)
            for slot, a in enumerate(addrs):
                ctx.set(store.addr_wr, {"slot": slot, "addr": a, "en": 1})
                await ctx.tick()
            ctx.set(store.addr_wr.en, 0)
            beats = [int(x) for x in rows.reshape(-1)]
            want = len(order) if by_slot else len(beats) // (store.parts if wide else 1)
            out, k, w = [], 0, 0
            for _ in range(MAX_CYCLES):
                if len(out) == want:
                    break
                ctx.set(store.rows.valid, k < len(beats) and rng.random() < 0.7)
                ctx.set(store.rows.payload, beats[k] if k < len(beats) else 0)
                if by_slot:
                    ctx.set(store.wanted.valid, w < len(order) and rng.random() < 0.8)
                    if w < len(order):
                        ctx.set(store.wanted.payload, {"slot": order[w][0], "beat": order[w][1]})
                ready = rng.random() < 0.7
                ctx.set(store.out.ready, ready)
                await ctx.delay(1e-9)
                if ctx.get(store.rows.valid) and ctx.get(store.rows.ready):
                    k += 1
                if by_slot and ctx.get(store.wanted.valid) and ctx.get(store.wanted.ready):
                    w += 1
                if ready and ctx.get(store.out.valid):
                    o = store.out.payload
                    out.append((ctx.get(o.data), ctx.get(o.beat_data), ctx.get(o.addr)))
                await ctx.tick()
            else:
                raise AssertionError("the row store stopped")
            ctx.set(store.rows.valid, 0)
            ctx.set(store.wanted.valid, 0)
            for _ in range(5):
                await ctx.tick()
            assert not ctx.get(store.busy)
            got.append(out)

    sim = Simulator(store)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def word(beats):
    return sum(int(b) << (512 * k) for k, b in enumerate(beats))


@pytest.mark.parametrize("seed, parts", [(0, 1), (1, 1), (2, 1), (3, 2), (4, 4)])
def test_in_order_and_by_slot(seed, parts):
    rng = np.random.default_rng(seed)
    slots, beats = 6, 4
    store = RowStore(slots, beats, 20, parts=parts)
    cases = []
    for by_slot, wide in ((0, 0), (1, 0), (0, 1), (1, 1), (0, 0)):
        n = int(rng.integers(1, slots + 1)) if by_slot else 3 * slots      # in order: wraps round
        rows = rng.integers(0, 1 << 62, (n, beats), dtype=np.int64)
        addrs = [int(a) for a in rng.integers(0, 1 << 19, slots)]
        step = parts if wide else 1             # by slot, a word's reader asks for its first beat
        order = [(int(s), b) for s in rng.permutation(n) for b in range(0, beats, step)] if by_slot else None
        cases.append((by_slot, wide, rows, order, addrs))
    got = run(store, cases, seed)
    for (by_slot, wide, rows, order, addrs), out in zip(cases, got):
        words = rows.reshape(-1, parts)
        if by_slot:
            assert out == [(word(rows[s, b - b % parts:][:parts]), int(rows[s, b]), addrs[s] + b)
                           for s, b in order]
        elif wide:
            assert [d for d, _, _ in out] == [word(w) for w in words]
        else:
            assert [b for _, b, _ in out] == [int(x) for x in rows.reshape(-1)]   # (no words)


@pytest.mark.parametrize("parts", [0, 3, 8, True])
def test_parts_are_checked(parts):
    with pytest.raises(ValueError, match=r"^RowStore parts must be a power of two dividing the 4 beats"):
        RowStore(6, 4, 20, parts=parts)
