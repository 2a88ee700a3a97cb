"""cocotb test of the engine on generated Verilog: jobs against a memory model.

The pytest side (:mod:`refree.verif.engine_run`) writes the job file: the memory image,
the packed configurations of the jobs to run one after the other (a forward job, then a
backward job, ...) and the memory's settings.  This module runs the jobs clock by clock
against one of two memories and writes the memory image and each job's error code,
counters and cycles back for the pytest side to check against the golden model:

* ``port`` (the bare :class:`~refree.hw.engine.engine.Engine`): its generic memory port,
  in-order responses after a random latency, random command backpressure;
* ``ddr4`` (:class:`~refree.verif.core_top.CoreSimTop`, the engine on R DDR4 ranks): one
  :class:`~refree.verif.ddr4_device.PinDevice` per rank behind the command pins, every
  command checked against the timing rules; the violations and the ranks' command
  counts are written back too.
"""
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


class PortMemory:
    """The generic memory port: in-order responses after ``latency`` cycles (uniform in a
    range), a command taken with probability ``ready_p``."""

    def __init__(self, dut, job, image):
        self.dut, self.mem = dut, image
        self.addr_bits = int(job["addr_bits"])
        self.lat_lo, self.lat_hi = (int(x) for x in job["latency"])
        self.ready_p = float(job["ready_p"])
        self.rng = random.Random(int(job["seed"]))
        self.pending = []               # [due cycle, data], in order
        self.ready = False
        dut.mem__cmd__ready.value = 0
        dut.mem__rsp__valid.value = 0

    def drive(self, cycle):
        self.ready = self.rng.random() < self.ready_p
        self.dut.mem__cmd__ready.value = int(self.ready)
        self.head = bool(self.pending) and self.pending[0][0] <= cycle
        self.dut.mem__rsp__valid.value = int(self.head)
        if self.head:
            self.dut.mem__rsp__payload.value = self.pending[0][1]

    def sample(self, cycle):
        dut, mask = self.dut, (1 << self.addr_bits) - 1
        if self.ready and int(dut.mem__cmd__valid.value):
            cmd = int(dut.mem__cmd__payload.value)
            addr, write, data = cmd & mask, (cmd >> self.addr_bits) & 1, cmd >> (self.addr_bits + 1)
            if write:
                self.mem[addr] = data
            else:
                self.pending.append([cycle + self.rng.randint(self.lat_lo, self.lat_hi),
                                     self.mem.get(addr, 0)])
        if self.head and int(dut.mem__rsp__ready.value):
            self.pending.pop(0)

    def outstanding(self):
        return len(self.pending)

    def counts(self):
        """No DRAM commands to count behind a generic port."""
        return None

    def image(self):
        return self.mem

    def finish(self, cycle):
        return {}


class DramMemory:
    """R DDR4 ranks behind the packed pins of :class:`~refree.verif.core_top.CoreSimTop`."""

    def __init__(self, dut, job, image):
        from refree.hw.ddr4 import RankGeometry, speed_grade
        from refree.hw.ddr4.mapping import AddressMapping
        from .core_top import CMD_BITS, WRDATA_EN_BIT, pin_widths, unpack_pins
        from .ddr4_device import PinDevice
        from .ddr4_model import Ddr4RankModel
        geometry = RankGeometry(*(int(x) for x in job["geometry"]))
        self.mapping = AddressMapping(int(job["ranks"]), int(job["chunk_beats"]), geometry)
        timing = speed_grade(str(job["grade"])).timing()
        self.devs = [PinDevice(Ddr4RankModel(timing, geometry)) for _ in range(self.mapping.ranks)]
        for addr, data in image.items():
            rank, bg, ba, row, col = self.mapping.locate(addr)
            self.devs[rank].model.load(bg, ba, row, col, data.to_bytes(64, "little"))
        self.dut = dut
        self.widths, self.unpack = pin_widths(geometry), unpack_pins
        self.cmd_bits, self.wren_bit = CMD_BITS, WRDATA_EN_BIT
        self.driven = (0, 0)
        self.job_marks = []
        dut.rank_rddata_valid.value = 0

    def drive(self, cycle):
        valid, data = 0, 0
        for i, dev in enumerate(self.devs):
            v, d = dev.read_data(cycle)
            if v:
                valid |= 1 << i
                data |= d << (512 * i)
        if (valid, data) != self.driven:
            self.dut.rank_rddata_valid.value = valid
            if valid:
                self.dut.rank_rddata.value = data
            self.driven = (valid, data)

    def sample(self, cycle):
        word = int(self.dut.rank_cmd.value)
        wrdata = None
        for i, dev in enumerate(self.devs):
            slot = (word >> (self.cmd_bits * i)) & ((1 << self.cmd_bits) - 1)
            wren = (slot >> self.wren_bit) & 1
            if slot & 1 and not wren and not dev.pending:       # cs_n high, nothing due
                continue
            if wren and wrdata is None:
                wrdata = int(self.dut.rank_wrdata.value)
            dev.clock(cycle, self.unpack(slot, self.widths), wren,
                      (wrdata >> (512 * i)) & ((1 << 512) - 1) if wren else 0)

    def outstanding(self):
        return sum(dev.pending for dev in self.devs)

    def counts(self):
        """Per rank: the model's counters, as a list of dicts."""
        from dataclasses import asdict
        return [asdict(dev.model.counters) for dev in self.devs]

    def image(self):
        mem = {}
        for rank, dev in enumerate(self.devs):
            for (bg, ba, row, col), data in dev.model.stored():
                mem[self.mapping.address(rank, bg, ba, row, col)] = int.from_bytes(data.tobytes(), "little")
        return mem

    def finish(self, cycle):
        for dev in self.devs:
            dev.model.finish(cycle)
        problems = [f"rank {i}: {v}" for i, dev in enumerate(self.devs)
                    for v in list(map(str, dev.model.violations)) + dev.errors]
        return {"violations": np.array(problems, dtype=str),
                "refreshes": np.array([dev.model.counters.refreshes for dev in self.devs])}


@cocotb.test()
async def run_jobs(dut):
    job = np.load(os.environ["REFREE_JOB"])
    out_path = os.environ["REFREE_OUT"]
    image = {int(a): int.from_bytes(bytes(d), "little") for a, d in zip(job["addrs"], job["data"])}
    max_cycles = int(job["max_cycles"])
    memory = (DramMemory if str(job["memory"]) == "ddr4" else PortMemory)(dut, job, image)
    now = 0

    async def clock():
        """One clock: inputs for it, then its settled outputs into the memory model."""
        nonlocal now
        memory.drive(now)
        await ReadOnly()
        memory.sample(now)
        busy = int(dut.busy.value)
        await RisingEdge(dut.clk)
        now += 1
        return busy

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    errors, counters, cycles, dram = [], [], [], []
    for config in job["configs"]:
        dut.config.value = int(str(config))
        await clock()
        dut.start.value = 1
        await clock()
        dut.start.value = 0
        before = memory.counts()
        cycle = 0
        while cycle < max_cycles:
            busy = await clock()
            cycle += 1
            if not busy and cycle > 2:
                break
        if cycle >= max_cycles and os.environ.get("REFREE_DEBUG"):
            for name in os.environ["REFREE_DEBUG"].split(","):
                obj = dut
                for part in name.split("."):
                    obj = getattr(obj, part)
                dut._log.warning(f"{name} = {obj.value}")
        assert cycle < max_cycles, f"the engine did not finish within {max_cycles} cycles"
        # (a write's data follows its command by CWL clocks)
        for _ in range(64):
            if not memory.outstanding():
                break
            await clock()
        assert not memory.outstanding(), "the engine finished with memory accesses outstanding"
        errors.append(int(dut.error.value))
        counters.append(str(int(dut.counters.value)))
        cycles.append(cycle)
        if before is not None:
            after = memory.counts()
            dram.append([[a[k] - b[k] for k in sorted(a)] for a, b in zip(after, before)])
        if errors[-1]:
            break
    extra = memory.finish(now)
    mem = memory.image()
    addrs = np.array(sorted(mem), np.int64)
    data = np.array([list(mem[a].to_bytes(64, "little")) for a in addrs], np.uint8).reshape(-1, 64)
    if dram:
        extra["dram"] = np.array(dram, np.int64)
        extra["dram_fields"] = np.array(sorted(memory.counts()[0]), dtype=str)
    np.savez(out_path, addrs=addrs, data=data, errors=np.array(errors), counters=np.array(counters),
             cycles=np.array(cycles), **extra)
