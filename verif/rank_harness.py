"""One rank's command engine (:class:`~refree.hw.ddr4.rank_controller.RankController`) in
Amaranth's simulator against the rank model through its pins (:mod:`.ddr4_device`): the
harness of ``tests/test_ddr4_controller.py`` and of the bandwidth benchmark below.

``python -m refree.verif.bench_controller`` prints the data-bus utilisation of three streams
at DDR4-2400 (2,000 random 256-byte table rows read; the same, half of the rows written;
8,000 sequential bursts read) for the default parameters and a few others, every run
checked (no timing violation, every read equal to a reference memory)."""
import numpy as np
from amaranth.sim import Simulator

from refree.hw.ddr4 import RankGeometry
from refree.hw.ddr4.commands import PINS
from refree.hw.ddr4.mapping import AddressMapping
from refree.hw.ddr4.rank_controller import RankController
from .ddr4_device import PinDevice
from .ddr4_model import Ddr4RankModel

__all__ = ["GEOMETRY", "run", "reference_reads", "random_initial", "table_row_requests",
           "check_clean", "check_run", "data_bus_share"]

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
    if got != reference_reads(reqs, initial):
        raise AssertionError("a read returned other data than the request order says")
    c = dev.model.counters
    assert (stats["reads"], stats["writes"], stats["acts"], stats["refs"], stats["hits"], stats["pres"]) \
        == (c.reads, c.writes, c.activates, c.refreshes, c.row_hits, c.precharges)
    return dev, cycles, stats


def data_bus_share(dev):
    """Busy data-bus clocks over the clocks from the first column command to the last burst."""
    cmds = sorted(dev.rd_cycles + dev.wr_cycles)
    return dev.model.counters.data_bus_busy_cycles / (cmds[-1] - cmds[0] + 4)
