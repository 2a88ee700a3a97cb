"""The DDR4 command engine of one rank in Amaranth's simulator, against the rank model through
its pins (verif/ddr4_device.py): every command checked against the timing rule table, every
read burst against a reference memory, refresh on time, and throughput figures."""
import dataclasses

import numpy as np
import pytest

from refree.hw.ddr4 import speed_grade
from refree.hw.ddr4.mapping import AddressMapping
from refree.hw.ddr4.params import DramParams
from refree.hw.ddr4.rank_controller import RankController
from refree.verif.rank_harness import (GEOMETRY, check_clean, check_run, data_bus_share, run,
                                       table_row_requests)


@pytest.mark.parametrize("grade", ["DDR4-2400", "DDR4-3200"])
@pytest.mark.parametrize("pattern", ["random", "rows", "stream"])
def test_traffic_is_legal_and_reads_return_what_was_written(grade, pattern):
    """Mixed traffic with gaps and response backpressure: no rule of the timing table is
    broken, write data is on the bus exactly CWL after its WR, every read returns what the
    reference memory holds (earlier writes of the run included), and the controller's
    command counts equal the model's."""
    rng = np.random.default_rng(1)
    timing = speed_grade(grade).timing()
    span = 1 << 13          # 8192 beats: every bank, several rows of each
    if pattern == "random":
        reqs = [(int(rng.integers(0, span)), bool(rng.random() < 0.4), int(rng.integers(0, 1 << 62)))
                for _ in range(300)]
    elif pattern == "rows":
        reqs = table_row_requests(rng, 80, 4, span, 0.3)
    else:
        reqs = [(b, False, 0) for b in range(256)] + [(b, True, b * 7 + 1) for b in range(64)] \
            + [(b, False, 0) for b in range(64)]
    reqs = [(b, w, d if w else 0) for b, w, d in reqs]
    check_run(reqs, timing, rng, gap_p=0.2, ready_p=0.7)


def test_conflicts_in_one_bank_keep_request_order_where_it_matters():
    """Every request in bank (0, 0), alternating two rows, reads and writes to four bursts
    of each (so reads follow writes to the same burst): with a window of one each access is
    a conflict (PRE, ACT); with the default window the engine serves the open row's requests
    first (a third of the conflicts) and every read still returns the data of the request
    order (no access passes an older one to its burst when either writes)."""
    timing = speed_grade("DDR4-2400").timing()
    m = AddressMapping(ranks=1, geometry=GEOMETRY)
    row_step = 1 << m.offsets()["row"][0]
    reqs = [((i % 2) * row_step + (i // 2) % 4 * 2, bool(i % 3 == 1), i + 1) for i in range(40)]
    conflicts = {}
    for window in (1, 16):
        dev, _, stats = check_run(reqs, timing, np.random.default_rng(2), window=window, write_high=1,
                                  write_low=0)
        conflicts[window] = dev.model.counters.row_conflicts
    assert conflicts[1] >= 38 and conflicts[16] <= 20, conflicts


def test_same_burst_hazards_under_reordering():
    """Reads, writes and read-modify-writes of a few bursts spread over every bank, mixed with
    random traffic that keeps other rows ready to pass: every read returns what the request
    order says, whatever the write watermarks."""
    timing = speed_grade("DDR4-2400").timing()
    rng = np.random.default_rng(7)
    hot = [int(x) for x in rng.integers(0, 1 << 13, 6)]
    reqs = []
    for i in range(400):
        b = hot[int(rng.integers(0, len(hot)))] if rng.random() < 0.6 else int(rng.integers(0, 1 << 13))
        reqs.append((b, bool(rng.random() < 0.5), i + 1))
    reqs = [(b, w, d if w else 0) for b, w, d in reqs]
    for high, low in ((1, 0), (8, 4), (16, 0)):
        check_run(reqs, timing, np.random.default_rng(8), gap_p=0.1, ready_p=0.6, write_high=high,
                  write_low=low)


@pytest.mark.parametrize("limit", [1, 3])
def test_refresh_is_on_time_under_continuous_traffic(limit):
    """tREFI shortened to 700 clocks, traffic that never lets the window empty: REFs are
    forced after ``limit`` owed ones, so two REFs are never more than (limit + 1) x tREFI
    apart, and the model's 9 x tREFI rule holds to the end.  When the traffic ends REFs are
    owed (with ``limit`` 3), and ``refreshed`` rises only once every one is paid."""
    rng = np.random.default_rng(3)
    timing = dataclasses.replace(speed_grade("DDR4-2400").timing(), tREFI=700)
    reqs = table_row_requests(rng, 700, 4, 1 << 13, 0.3)
    dev, cycles, stats = check_run(reqs, timing, rng, postpone_limit=limit)
    refs = dev.ref_cycles
    assert stats["owed_when_idle"] == (limit == 3)
    assert len(refs) >= cycles // 700 - 1
    gaps = np.diff([0] + refs)
    assert gaps.max() <= (limit + 1) * 700, gaps.max()


def test_refresh_is_done_when_idle():
    """With nothing to do, each owed REF is issued at once: one per tREFI."""
    timing = dataclasses.replace(speed_grade("DDR4-2400").timing(), tREFI=500)
    got, dev, cycles, stats = run([], timing, tail=3000)
    check_clean(dev)
    # owed at the end of each tREFI, issued in the next clock, on the pins one clock later
    assert dev.ref_cycles == list(range(501, cycles, 500))


def test_back_to_back_bursts_reach_the_data_bus_peak():
    """A sequential read stream: consecutive beats alternate bank groups (the address
    mapping), so bursts follow each other tCCD_S = 4 clocks apart, the data bus peak.  Measured
    over 512 bursts at DDR4-2400: at least 90 % of the clocks from the first to the last
    burst carry data (the rest: opening the next rows)."""
    rng = np.random.default_rng(4)
    timing = speed_grade("DDR4-2400").timing()
    reqs = [(b, False, 0) for b in range(512)]
    dev, cycles, stats = check_run(reqs, timing, rng)
    rd = dev.rd_cycles
    busy = dev.model.counters.data_bus_busy_cycles
    assert busy / (rd[-1] - rd[0] + 4) >= 0.9


def test_table_rows_keep_the_bus_busy():
    """Random table rows of four beats (D = 64) over the whole rank: each needs two ACTs; the
    look-ahead opens the next rows while the current one transfers, and the first ready
    request goes first.  Issue 15's three streams on the chip's default (window 24,
    watermarks 16 / 8) with a REF every tREFI, as DRAMsim3 refreshes: random rows read, the
    same half written, sequential bursts; prints each one's data-bus utilisation, ACTs and
    row hits and asserts issue 15's goals (0.83, 0.71, 0.95: within 10 % of DRAMsim3's 0.92,
    0.79, 0.96).  The streams here are shorter than tREFI (about 3,000 clocks), so no REF
    falls in them; the goals with REFs are measured on the same streams, longer, by `python
    -m refree.verif.bench_controller` (2,000 rows: 0.921, 0.716, 0.959; docs/history.md).
    Also reads with windows of 1, 8 and 16: far less in order (window 1), and the mixed
    stream better than with a window of 16 (watermarks 8 / 4)."""
    timing = speed_grade("DDR4-2400").timing()
    chip = dict(DramParams().controller_kwargs(), postpone_limit=1)
    streams = {"random rows, reads": lambda rng: table_row_requests(rng, 160, 4, 1 << 16, 0.0),
               "random rows, half written": lambda rng: table_row_requests(rng, 160, 4, 1 << 16, 0.5),
               "sequential bursts, reads": lambda rng: [(b, False, 0) for b in range(4 * 160)]}
    util, lines = {}, []
    for name, make in streams.items():
        rng = np.random.default_rng(5)
        dev, _, stats = check_run(make(rng), timing, rng, **chip)
        util[name] = data_bus_share(dev)
        lines.append(f"{name} {util[name]:.3f} ({stats['acts']} ACTs, {stats['hits']} row hits)")
    for window, write_p in ((1, 0.0), (8, 0.0), (16, 0.0), (16, 0.5)):
        rng = np.random.default_rng(5)
        dev, _, _ = check_run(table_row_requests(rng, 160, 4, 1 << 16, write_p), timing, rng, window=window,
                              write_high=min(window, 8), write_low=min(window - 1, 4))
        util[window, write_p] = data_bus_share(dev)
    print("table rows, DDR4-2400, the chip's default, a REF every tREFI: " + "; ".join(lines))
    print("reads, window 1 {:.2f}, 8 {:.2f}, 16 {:.2f}; half written, window 16 {:.2f}".format(
        *[util[k] for k in ((1, 0.0), (8, 0.0), (16, 0.0), (16, 0.5))]))
    assert util["random rows, reads"] >= 0.83 and util["random rows, half written"] >= 0.71
    assert util["sequential bursts, reads"] >= 0.95
    assert util[1, 0.0] < 0.6 * util[16, 0.0] and util["random rows, half written"] > util[16, 0.5]


@pytest.mark.parametrize("param", ["tRCD", "tRP", "tRAS", "tCCD_L", "tFAW", "tWTR_L", "tRTP"])
def test_a_controller_one_clock_short_is_caught(param):
    """The harness can fail: a controller built with one spacing a clock shorter than the
    device's breaks that rule on the same traffic."""
    rng = np.random.default_rng(6)
    timing = speed_grade("DDR4-2400").timing()
    short = dataclasses.replace(timing, **{param: getattr(timing, param) - 1})
    reqs = table_row_requests(rng, 60, 4, 1 << 10, 0.5) + table_row_requests(rng, 60, 4, 1 << 16, 0.5)
    # a stride of two beats stays in one bank group: back-to-back _L spacings
    reqs += [(2 * i, i % 4 == 0, i) for i in range(64)]
    _, dev, _, _ = run(reqs, short, device_timing=timing)
    broken = {v.rule.split(" ")[1] if "->" in v.rule else v.rule for v in dev.model.violations}
    assert any(param in r or (param == "tFAW" and "tFAW" in r) or
               (param == "tWTR_L" and "wr_to_rd_l" in r) for r in broken), broken


@pytest.mark.parametrize("kw, message", [
    (dict(window=0), "RankController window must be an integer in [1, 32], not 0"),
    (dict(read_depth=1), "RankController read_depth must be an integer in [2, 64], not 1"),
    (dict(window=8, write_high=9), "RankController write_high must be an integer in [1, 8] (window 8), not 9"),
    (dict(write_high=6, write_low=6), "RankController write_low must be an integer in [0, 5] (window 16), not 6"),
    (dict(postpone_limit=9), "RankController postpone_limit must be an integer in [1, 8], not 9"),
])
def test_bad_parameters_name_the_parameter(kw, message):
    with pytest.raises(ValueError) as e:
        RankController(speed_grade("DDR4-2400").timing(), **kw)
    assert str(e.value) == message
