"""The DDR4 command engine of one rank in Amaranth's simulator, against the rank model through
its pins (verif/ddr4_device.py): every command checked against the timing rule table, every
read burst against a reference memory, refresh on time, and throughput figures."""
import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from refree.hw.ddr4 import RankGeometry, speed_grade
from refree.hw.ddr4.commands import PINS
from refree.hw.ddr4.mapping import AddressMapping
from refree.hw.ddr4.rank_controller import RankController
from refree.verif.ddr4_device import PinDevice
from refree.verif.ddr4_model import Ddr4RankModel

GEOMETRY = RankGeometry(rows=1 << 10)          # small rows: the same addressing, less to store


def run(requests, timing, *, initial=(), gap_p=0.0, ready_p=1.0, seed=0, max_cycles=60_000,
        tail=200, geometry=GEOMETRY, device_timing=None, **kw):
    """Send ``requests`` ([(beat, write, data)], beats of a one-rank :class:`AddressMapping`)
    through a :class:`RankController`, the DRAM holding ``initial`` ({beat: data}); returns
    (read responses, device, cycles, the controller's stats).  The run ends ``tail`` clocks
    after the controller is idle and owes no REF.  ``device_timing``: the device's own
    timing when it differs from the one the controller was built for."""
    mapping = AddressMapping(ranks=1, geometry=geometry)
    dut = RankController(timing, geometry, **kw)
    model = Ddr4RankModel(device_timing or timing, geometry)
    for beat, data in dict(initial).items():
        _, bg, ba, row, col = mapping.locate(beat)
        model.load(bg, ba, row, col, int(data).to_bytes(64, "little"))
    dev = PinDevice(model)
    rng = np.random.default_rng(seed)
    got, out = [], {}

    async def bench(ctx):
        cycle, k = 0, 0
        n_reads = sum(1 for _, w, _ in requests if not w)
        quiet = 0
        while cycle < max_cycles:
            pins = {p: ctx.get(getattr(dut.dfi, p)) for p in PINS}
            dev.clock(cycle, pins, ctx.get(dut.dfi.wrdata_en), ctx.get(dut.dfi.wrdata))
            v, d = dev.read_data(cycle)
            ctx.set(dut.dfi.rddata_valid, v)
            ctx.set(dut.dfi.rddata, d)
            offer = k < len(requests) and rng.random() >= gap_p
            if offer:
                beat, write, data = requests[k]
                _, bg, ba, row, col = mapping.locate(beat)
                ctx.set(dut.req.payload, {"loc": {"burst": col // 8, "bg": bg, "ba": ba, "row": row},
                                          "write": write, "data": data})
            ctx.set(dut.req.valid, offer)
            take_rsp = rng.random() < ready_p
            ctx.set(dut.rsp.ready, take_rsp)
            if offer and ctx.get(dut.req.ready):
                k += 1
            if take_rsp and ctx.get(dut.rsp.valid):
                got.append(ctx.get(dut.rsp.payload))
            done = k == len(requests) and len(got) == n_reads and ctx.get(dut.idle)
            if done and "owed_when_idle" not in out:
                out["owed_when_idle"] = not ctx.get(dut.refreshed)
            done = done and ctx.get(dut.refreshed)
            quiet = quiet + 1 if done else 0
            await ctx.tick()
            cycle += 1
            if quiet > tail:
                break
        model.finish(cycle)
        out["cycles"] = cycle
        out["stats"] = {name: ctx.get(getattr(dut.stats, name)) for name in dut.Stats.members}
        out["stats"]["owed_when_idle"] = out.get("owed_when_idle", False)

    sim = Simulator(dut)
    sim.add_clock(1e-9)
    sim.add_testbench(bench)
    sim.run()
    return got, dev, out["cycles"], out["stats"]


def reference_reads(requests, initial):
    """The read data a correct memory returns, in request order."""
    mem, want = dict(initial), []
    for beat, write, data in requests:
        if write:
            mem[beat] = data
        else:
            want.append(mem.get(beat, 0))
    return want


def random_initial(beats, rng):
    return {b: int.from_bytes(rng.integers(0, 256, 64, dtype=np.uint8).tobytes(), "little")
            for b in sorted(set(beats))}


def table_row_requests(rng, n_rows, beats_per_row, span, write_p):
    """Table-row traffic: ``n_rows`` rows of ``beats_per_row`` consecutive beats at random
    row starts in ``span`` beats, each row read or written."""
    reqs = []
    for _ in range(n_rows):
        start = int(rng.integers(0, span // beats_per_row)) * beats_per_row
        write = bool(rng.random() < write_p)
        reqs += [(start + j, write, int(rng.integers(0, 1 << 62)) if write else 0)
                 for j in range(beats_per_row)]
    return reqs


def check_clean(dev):
    assert dev.model.violations == [], "\n".join(map(str, dev.model.violations[:10]))
    assert dev.errors == [], dev.errors[:10]
    assert dev.pending == 0


def check_run(reqs, timing, rng, **kw):
    initial = random_initial([b for b, _, _ in reqs], rng)
    got, dev, cycles, stats = run(reqs, timing, initial=initial, **kw)
    check_clean(dev)
    assert got == reference_reads(reqs, initial)
    c = dev.model.counters
    assert (stats["reads"], stats["writes"], stats["acts"], stats["refs"], stats["hits"], stats["pres"]) \
        == (c.reads, c.writes, c.activates, c.refreshes, c.row_hits, c.precharges)
    return dev, cycles, stats


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


def test_conflicts_in_one_bank_are_served_in_order():
    """Every request in bank (0, 0), alternating two rows, reads and writes: each access is
    a conflict (PRE, ACT), and the data is still that of the request order."""
    rng = np.random.default_rng(2)
    timing = speed_grade("DDR4-2400").timing()
    m = AddressMapping(ranks=1, geometry=GEOMETRY)
    row_step = 1 << m.offsets()["row"][0]
    reqs = [((i % 2) * row_step + (i // 2) % 4 * 2, bool(i % 3 == 1), i + 1) for i in range(40)]
    dev, _, stats = check_run(reqs, timing, rng)
    assert dev.model.counters.row_conflicts >= 38


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
    """Random table rows of four beats (D = 64) over the whole rank: each needs two ACTs, and
    the look-ahead opens the next rows while the current one transfers.  Prints the data-bus
    utilisation; asserts at least 60 % (an in-order controller without look-ahead, window 1,
    gets far less: also asserted)."""
    timing = speed_grade("DDR4-2400").timing()
    util = {}
    for window in (1, 8):
        rng = np.random.default_rng(5)
        reqs = table_row_requests(rng, 128, 4, 1 << 16, 0.0)
        dev, cycles, stats = check_run(reqs, timing, rng, window=window)
        rd = dev.rd_cycles
        util[window] = dev.model.counters.data_bus_busy_cycles / (rd[-1] - rd[0] + 4)
    print(f"table rows, DDR4-2400: data-bus utilisation window 1 {util[1]:.2f}, window 8 {util[8]:.2f}")
    assert util[8] >= 0.6
    assert util[1] < 0.6 * util[8]


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
    (dict(postpone_limit=9), "RankController postpone_limit must be an integer in [1, 8], not 9"),
])
def test_bad_parameters_name_the_parameter(kw, message):
    with pytest.raises(ValueError) as e:
        RankController(speed_grade("DDR4-2400").timing(), **kw)
    assert str(e.value) == message
