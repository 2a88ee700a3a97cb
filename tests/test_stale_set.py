# amaranth: UnusedElaboratable=no
"""Slipstream's stale set (hw/engine/stale_set.py) in Amaranth's simulator: loaded with the
list that the host's ``fit_stale`` keeps, it must answer every (table, row) key exactly
(the kept pairs and nothing else); a list with one pair more than a set holds must set
``full``; ``clear`` must empty it."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.engine.stale_set import (ENTRY_TABLE_SHIFT, EPOCH_BITS, StaleSet, StaleSetParams, fit_stale,
                                        stale_key, table_bits)
from refree.hw.lrdimm.hot_row_store import set_index

INDEX_WIDTH, MAX_TABLES, ROWS = 10, 2, 300
PARAMS = StaleSetParams(entries=32, ways=4)
KEY_BITS = INDEX_WIDTH + table_bits(MAX_TABLES)


def keys_of(entries):
    return [stale_key(e >> ENTRY_TABLE_SHIFT, e & ((1 << ENTRY_TABLE_SHIFT) - 1), INDEX_WIDTH) for e in entries]


def run(script):
    dut = StaleSet(PARAMS, KEY_BITS)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out = {}

    async def bench(ctx):
        await script(ctx, dut, out)
    sim.add_testbench(bench)
    sim.run()
    return out


async def load(ctx, dut, keys):
    """A clear, then the keys as the set takes them (none while it clears: a set a cycle)."""
    ctx.set(dut.clear, 1)
    await ctx.tick()
    ctx.set(dut.clear, 0)
    waited = 0
    for k in keys:
        ctx.set(dut.insert.valid, 1)
        ctx.set(dut.insert.payload, k)
        while not ctx.get(dut.insert.ready):
            waited += 1
            await ctx.tick()
        await ctx.tick()
    ctx.set(dut.insert.valid, 0)
    assert waited == (PARAMS.entries // PARAMS.ways if keys else 0)


async def answers(ctx, dut):
    got = set()
    for t in range(MAX_TABLES):
        for r in range(ROWS):
            ctx.set(dut.key, stale_key(t, r, INDEX_WIDTH))
            if ctx.get(dut.hit):
                got.add((t, r))
    return got


async def marks(ctx, dut, pairs):
    """Mark each pair in turn: whether it was the pair's first."""
    got = []
    for t, r in pairs:
        ctx.set(dut.key, stale_key(t, r, INDEX_WIDTH))
        ctx.set(dut.mark, 1)
        got.append(ctx.get(dut.first))
        await ctx.tick()
    ctx.set(dut.mark, 0)
    return got


def test_the_set_holds_exactly_the_pairs_the_host_keeps():
    rng = np.random.default_rng(5)
    stale = [rng.random(ROWS) < 0.1 for _ in range(MAX_TABLES)]     # about 60 pairs: some sets fill
    entries, kept = fit_stale(stale, PARAMS, INDEX_WIDTH, MAX_TABLES)
    want = {(t, int(r)) for t in range(MAX_TABLES) for r in kept[t].nonzero()[0]}
    assert 20 <= len(entries) == len(want) <= PARAMS.entries
    assert all((kept[t] <= stale[t]).all() for t in range(MAX_TABLES))

    async def script(ctx, dut, out):
        await load(ctx, dut, keys_of(entries))
        out["full"] = ctx.get(dut.full)
        out["hits"] = await answers(ctx, dut)
        out["marks"] = await marks(ctx, dut, sorted(want) * 2)
        await load(ctx, dut, [])
        await ctx.tick().repeat(PARAMS.entries // PARAMS.ways)
        out["after_clear"] = await answers(ctx, dut)
    out = run(script)
    assert out["full"] == 0 and out["hits"] == want and out["after_clear"] == set()
    assert out["marks"] == [1] * len(want) + [0] * len(want)      # each pair first once


def test_a_pair_past_its_sets_ways_sets_full():
    set_bits = PARAMS.set_bits
    same_set = [k for k in range(1 << KEY_BITS) if set_index(k, KEY_BITS, set_bits) == 3][:PARAMS.ways + 1]

    async def script(ctx, dut, out):
        await load(ctx, dut, same_set[:PARAMS.ways])
        out["ways_full"] = ctx.get(dut.full)
        await load(ctx, dut, same_set)
        out["one_more"] = ctx.get(dut.full)
        ctx.set(dut.key, same_set[-1])
        out["dropped_hit"] = ctx.get(dut.hit)
    out = run(script)
    assert out == {"ways_full": 0, "one_more": 1, "dropped_hit": 0}


def test_bad_parameters_are_refused():
    for bad in (dict(entries=3), dict(entries=8, ways=16), dict(ways=0), dict(entries=True)):
        with pytest.raises(ValueError, match="StaleSetParams"):
            StaleSetParams(**bad)


def test_the_configuration_names_a_bad_slipstream_parameter():
    from refree.gen.config import load_config
    assert not load_config(None).slipstream.enabled and "stale" not in load_config(None).engine_kwargs()
    conf = load_config(None, {"slipstream": {"entries": 1024, "ways": 8}})
    assert conf.engine_kwargs()["stale"] == StaleSetParams(1024, 8)
    for bad, field in (({"entries": 12}, "StaleSetParams.entries"), ({"ways": 3}, "StaleSetParams.ways"),
                       ({"entries": 4, "ways": 8}, "StaleSetParams.ways")):
        with pytest.raises(ValueError, match=f"slipstream: {field}"):
            load_config(None, {"slipstream": bad})
    with pytest.raises(ValueError, match="slipstream: a stale set takes index_width <= 48"):
        load_config(None, {"slipstream": {"entries": 64}, "parts": {"index_width": 56}})


def test_each_job_counts_its_rows_afresh_past_the_epochs_wrap():
    """A pair marked is not first again until an unmark (a job's start); a pair marked at
    epoch 0 and not since must be first again when the epoch comes back to 0 (the marks
    swept at the wrap), and the set keeps its pairs through it."""
    pairs = [(0, 5), (1, 9)]
    assert len({set_index(stale_key(t, r, INDEX_WIDTH), KEY_BITS, PARAMS.set_bits) for t, r in pairs}) == 2
    entries = [r | t << ENTRY_TABLE_SHIFT for t, r in pairs]

    async def unmark(ctx, dut):
        ctx.set(dut.unmark, 1)
        await ctx.tick()
        ctx.set(dut.unmark, 0)
        while not ctx.get(dut.ready):
            await ctx.tick()

    async def script(ctx, dut, out):
        await load(ctx, dut, keys_of(entries))
        await ctx.tick().repeat(PARAMS.entries // PARAMS.ways)     # (the reset's sweep, then the load's)
        out["first_job"] = await marks(ctx, dut, pairs + pairs)
        await unmark(ctx, dut)
        out["second_job"] = await marks(ctx, dut, pairs[:1])       # (pair 1 keeps epoch 0's mark)
        for _ in range((1 << EPOCH_BITS) - 1):                     # back to epoch 0
            await unmark(ctx, dut)
        out["after_wrap"] = await marks(ctx, dut, pairs)
        out["hits"] = await answers(ctx, dut)
    out = run(script)
    assert out["first_job"] == [1, 1, 0, 0] and out["second_job"] == [1]
    assert out["after_wrap"] == [1, 1] and out["hits"] == set(pairs)
