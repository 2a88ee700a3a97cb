"""The DRAM side (:class:`~refree.hw.ddr4.dram_side.DramSide`: R rank command engines behind
the engine's memory port) in Amaranth's simulator against the rank models through their
pins: the harness of ``tests/test_ddr4_dram_side.py`` and of ``python -m
refree.verif.bench_controller --ranks R``."""
import numpy as np
from amaranth.sim import Simulator

from refree.hw.ddr4 import RankGeometry, speed_grade
from refree.hw.ddr4.commands import PINS
from refree.hw.ddr4.dram_side import DramSide
from .ddr4_device import PinDevice
from .ddr4_model import Ddr4RankModel

__all__ = ["GEOMETRY", "run"]

GEOMETRY = RankGeometry(rows=1 << 10)          # small rows: the same addressing, less to store


def run(mapping, requests, initial, *, ready_p=1.0, seed=0, max_cycles=40_000, with_accepted=False, **dram):
    """Send ``requests`` ([(beat, write, data)]) through a :class:`DramSide` of ``mapping``'s
    ranks at DDR4-2400 (``dram``: its keyword arguments, e.g. ``window`` or
    ``reads_in_flight``), the DRAM holding ``initial`` ({beat: int}), responses taken with
    probability ``ready_p`` a cycle; returns (read responses, the devices, cycles) and with
    ``with_accepted`` the cycle each request was taken."""
    timing = speed_grade("DDR4-2400").timing()
    dut = DramSide(timing, mapping, **dram)
    devs = [PinDevice(Ddr4RankModel(timing, mapping.geometry)) for _ in range(mapping.ranks)]
    for beat, data in initial.items():
        rank, bg, ba, row, col = mapping.locate(beat)
        devs[rank].model.load(bg, ba, row, col, data.to_bytes(64, "little"))
    rng = np.random.default_rng(seed)
    got, out, accepted = [], {}, []
    n_reads = sum(1 for _, w, _ in requests if not w)

    async def bench(ctx):
        cycle, k = 0, 0
        while cycle < max_cycles and not (k == len(requests) and len(got) == n_reads
                                          and ctx.get(dut.idle)):
            for dev, port in zip(devs, dut.ranks()):
                dev.clock(cycle, {p: ctx.get(getattr(port, p)) for p in PINS},
                          ctx.get(port.wrdata_en), ctx.get(port.wrdata))
                v, d = dev.read_data(cycle)
                ctx.set(port.rddata_valid, v)
                ctx.set(port.rddata, d)
            offer = k < len(requests)
            if offer:
                beat, write, data = requests[k]
                ctx.set(dut.port.cmd.payload, {"addr": beat, "write": write, "data": data})
            ctx.set(dut.port.cmd.valid, offer)
            take = rng.random() < ready_p
            ctx.set(dut.port.rsp.ready, take)
            if offer and ctx.get(dut.port.cmd.ready):
                k += 1
                accepted.append(cycle)
            if take and ctx.get(dut.port.rsp.valid):
                got.append(ctx.get(dut.port.rsp.payload))
            await ctx.tick()
            cycle += 1
        for dev in devs:
            dev.model.finish(cycle)
        out["cycles"] = cycle
        out["accepted"] = accepted

    sim = Simulator(dut)
    sim.add_clock(1e-9)
    sim.add_testbench(bench)
    sim.run()
    if with_accepted:
        return got, devs, out["cycles"], out["accepted"]
    return got, devs, out["cycles"]
