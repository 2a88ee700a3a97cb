"""The memory map check (step 0 of a job) against a plain-Python statement of the rule, on
random job configurations: the verdict and the pair (so the cycle) where the walk stops;
with a stale set's list (Slipstream, a backward job's) and without."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.engine.engine import Engine
from refree.hw.engine.memory_map_check import MemoryMapCheck
from refree.hw.engine.params import EngineParams
from refree.hw.engine.stale_set import StaleSetParams

MAX_TABLES, ADDR_BITS, BEATS = 4, 12, 4
STRIPE = 4      # the staging rows striped (hw/engine/staging.py): whole groups of 4 rows


def regions(c, forward):
    """[lo, hi, live] per region: the tables, then offsets, indices, weights, output (and
    the stale list, when the config has one: int64 entries, a backward job's)."""
    T, B, n = c["num_tables"], c["batch_size"], c["num_indices"]
    out = []
    for i, (base, rows, stride) in enumerate(c["tables"]):
        out.append((base, base + rows * stride, i < T and rows != 0))
    job_out = c["pooled_addr"] if forward else c["grad_addr"]
    out += [(c["offsets_addr"], c["offsets_addr"] + (T * B + 8) // 8, True),
            (c["indices_addr"], c["indices_addr"] + (n + 7) // 8, n != 0),
            (c["weights_addr"], c["weights_addr"] + (n + 15) // 16, c["weighted"] and n != 0),
            (job_out, job_out + -(-T * B // STRIPE) * STRIPE * BEATS, T * B != 0)]
    if "stale_addr" in c:
        out.append((c["stale_addr"], c["stale_addr"] + (c["stale_count"] + 7) // 8,
                    not forward and c["stale_count"] != 0))
    return out


def first_conflict(c, forward):
    """The walk's pairs in order (tables i < max(T, 1), every region j); the index of the
    first that conflicts, or None, and the number of pairs."""
    reg, end = regions(c, forward), 1 << ADDR_BITS
    pairs = [(i, j) for i in range(max(c["num_tables"], 1)) for j in range(len(reg))]
    for k, (i, j) in enumerate(pairs):
        (ilo, ihi, ilive), (jlo, jhi, jlive) = reg[i], reg[j]
        jlive = jlive and j != i
        if ilive and (ihi > end or c["tables"][i][2] < BEATS):
            return k, len(pairs)
        if jlive and jhi > end:
            return k, len(pairs)
        if ilive and jlive and ilo < jhi and jlo < ihi:
            return k, len(pairs)
    return None, len(pairs)


def abut(rng, c, forward):
    """Move a staging array so that it ends at a table's first beat or one beat after it
    (touching, or sharing exactly one beat), or a table so that it ends at the array."""
    keys = ["offsets_addr", "indices_addr", "weights_addr", "pooled_addr" if forward else "grad_addr"] \
        + (["stale_addr"] if "stale_addr" in c else [])
    j = int(rng.integers(0, len(keys)))
    i = int(rng.integers(0, MAX_TABLES))
    lo, hi, _ = regions(c, forward)[MAX_TABLES + j]
    base = c["tables"][i][0]
    if rng.random() < 0.5 and base >= hi - lo:
        c[keys[j]] = base - (hi - lo) + int(rng.integers(0, 2))
    else:
        tlo, thi, _ = regions(c, forward)[i]
        if lo >= thi - tlo:
            c["tables"][i] = (lo - (thi - tlo) + int(rng.integers(0, 2)),) + c["tables"][i][1:]
    return c


def random_config(rng, stale_list):
    span = 1 << ADDR_BITS
    # (addresses fit their fields; a region may still end past memory)
    near = lambda: int(rng.integers(span - 80, span)) if rng.random() < 0.2 else int(rng.integers(0, span - 80))
    return dict(num_tables=int(rng.integers(0, MAX_TABLES + 1)), batch_size=int(rng.integers(0, 12)),
                num_indices=int(rng.choice([1, 17, 33, 8, 16, int(rng.integers(0, 60))])), weighted=int(rng.integers(0, 2)),
                offsets_addr=near(), indices_addr=near(), weights_addr=near(), pooled_addr=near(),
                grad_addr=near(),
                tables=[(near(), int(rng.integers(0, 30)), int(rng.choice([2, 4, 4, 5, 8])))
                        for _ in range(MAX_TABLES)],
                **({"stale_addr": near(), "stale_count": int(rng.choice([0, 1, 8, 9, int(rng.integers(0, 60))]))}
                   if stale_list else {}))


@pytest.mark.parametrize("stale_list", [False, True], ids=["plain", "stale-list"])
def test_the_walk_stops_at_the_first_conflict_or_passes_every_pair(stale_list):
    layout = Engine(EngineParams(), dim=16 * BEATS, max_tables=MAX_TABLES, addr_bits=ADDR_BITS,
                    stale=StaleSetParams(64) if stale_list else StaleSetParams()).Config
    dut = MemoryMapCheck(layout, MAX_TABLES, ADDR_BITS, BEATS, STRIPE, stale_list=stale_list)
    rng = np.random.default_rng(11)
    cases = []
    for k in range(600):
        c, forward = random_config(rng, stale_list), bool(rng.integers(0, 2))
        cases.append((abut(rng, c, forward) if k % 2 else c, forward))
    seen = {"refused": 0, "passed": 0}

    async def bench(ctx):
        for c, forward in cases:
            for k in ("num_tables", "batch_size", "num_indices", "weighted", "offsets_addr", "indices_addr",
                      "weights_addr", "pooled_addr", "grad_addr") + (("stale_addr", "stale_count") if stale_list else ()):
                ctx.set(getattr(dut.config, k), c[k])
            for i, (base, rows, stride) in enumerate(c["tables"]):
                t = dut.config.tables[i]
                ctx.set(t.base, base), ctx.set(t.rows, rows), ctx.set(t.stride, stride)
            ctx.set(dut.forward, forward)
            ctx.set(dut.restart, 1)
            await ctx.tick()
            ctx.set(dut.restart, 0)
            want, pairs = first_conflict(c, forward)
            walked = 0
            while True:
                walked += 1
                assert walked <= pairs
                if ctx.get(dut.conflict) or ctx.get(dut.last):
                    break
                ctx.set(dut.step, 1)
                await ctx.tick()
                ctx.set(dut.step, 0)
            got = walked - 1 if ctx.get(dut.conflict) else None
            assert got == want, (c, forward)
            if want is None:
                assert walked == pairs          # every pair, then the verdict
            seen["refused" if want is not None else "passed"] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(seen.values()) > 50          # both verdicts, often
