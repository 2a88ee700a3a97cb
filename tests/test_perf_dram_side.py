"""The performance model's DRAM side (golden/perf/dram_side.py) against the RTL's DramSide in
Amaranth's simulator, on the device models: the same streams take the same clocks (within
2 %) and the same ACTs, at 1, 2 and 4 ranks; and a job's traffic (golden/perf/traffic.py)
moves the beats the engine's counters say."""
import numpy as np
import pytest

from refree.golden.perf.dram_side import serve
from refree.golden.perf.traffic import job_requests
from refree.golden.traces import make_trace
from refree.hw.ddr4.params import DramParams
from refree.verif.dram_side_harness import GEOMETRY, run

ROWS = 40


def _streams(span, rng):
    rows = rng.integers(0, span // 4, (ROWS, 2))
    return {"random reads": [(int(r) * 4 + j, False) for r in rows[:, 0] for j in range(4)],
            "read-modify-write with a gradient row": [
                (int(x) * 4 + j, w) for g, r in rows for x, w in ((g, False), (r, False), (r, True))
                for j in range(4)],
            "sequential": [(b, False) for b in range(4 * ROWS)],
            "half written": [(int(r) * 4 + j, bool(w)) for r, w in zip(rows[:, 0], rng.random(ROWS) < 0.5)
                             for j in range(4)]}


# (two ranks, a build of their own, with the slow tests: 1 and 4 cover the one-rank and the
# several-rank rules; the suite is near its 35-minute budget)
@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.slow), 4])
def test_clocks_and_acts_as_the_rtl(ranks):
    params = DramParams(ranks=ranks, rows=GEOMETRY.rows)
    for name, reqs in _streams(1 << params.mapping.addr_bits, np.random.default_rng(ranks)).items():
        model = serve(reqs, params)
        _, devs, cycles = run(params.mapping, [(b, w, 7) for b, w in reqs], {}, max_cycles=100_000,
                              **params.controller_kwargs())
        assert abs(model.cycles / cycles - 1) <= 0.02, (name, model.cycles, cycles)
        assert sum(s["acts"] for s in model.stats) == sum(d.model.counters.activates for d in devs), name
        assert sum(s["reads"] + s["writes"] for s in model.stats) == len(reqs), name
        assert len(model.answered) == sum(1 for _, w in reqs if not w)


def test_refresh_and_window_limits():
    """A stream past 8 x tREFI pays its REFs (postponed up to 8 while traffic waits); a window
    of one entry serialises the rows."""
    params = DramParams(ranks=1)
    reqs = [(b, False) for b in range(20_000)]
    long = serve(reqs, params)
    refs, t = long.stats[0]["refs"], params.timing
    # a REF owed every tREFI; at most 8 postponed, and none paid once the traffic ends
    assert long.cycles // t.tREFI - 8 <= refs <= long.cycles // t.tREFI, (refs, long.cycles)
    assert long.cycles >= 4 * len(reqs) + refs * t.tRFC
    narrow = serve(_streams(1 << 20, np.random.default_rng(0))["random reads"],
                   DramParams(ranks=1, window=1, write_high=1, write_low=0))
    wide = serve(_streams(1 << 20, np.random.default_rng(0))["random reads"], params)
    assert narrow.cycles > 1.5 * wide.cycles


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_traffic_moves_the_counted_beats(mode):
    """Every beat the golden counts make a job move (tables, gradient and pooled rows) is in
    its traffic, once per pass as the engine moves it."""
    from refree.gen.config import load_config
    from refree.verif.engine_run import limits_of
    from refree.verif.staging import layout
    trace = make_trace("meta", 128, 1, seed=3)
    b = trace.batch
    lay = layout(b, [np.zeros((n, 64), np.float32) for n in trace.num_rows])
    limits = limits_of(load_config(None).params)
    fwd = job_requests(b, lay, mode, "forward", limits)
    bwd = job_requests(b, lay, mode, "backward", limits)
    tables = range(lay.tables[0][0], lay.tables[0][0] + lay.tables[0][1] * lay.tables[0][2])
    lookups, pooled = len(b.indices), 128 * 4
    table_reads = sum(1 for a, w in fwd if a in tables and not w)
    if mode == "baseline":
        assert table_reads == 4 * lookups
        assert sum(1 for a, w in bwd if a in tables and w) == 4 * lookups
    else:
        # each part's distinct rows read forward; each distinct row written once backward
        from refree.golden.planner import partition, plan_part
        distinct = sum(len(plan_part(b, p, "sum").rows) for p in partition(b, limits))
        assert table_reads == 4 * distinct
        assert sum(1 for a, w in bwd if a in tables and w) == 4 * len(set(b.indices.tolist()))
    assert sum(1 for _, w in fwd if w) == pooled
