"""cocotb test of the engine on generated Verilog: jobs against a memory model.

The pytest side (:mod:`refree.verif.engine_run`) writes the job file: the memory image,
the packed configurations of the jobs to run one after the other (a forward job, then a
backward job, ...) and the memory's settings.  This module runs the jobs clock by clock
against one of two memories and writes the memory image and each job's error code,
counters and cycles back for the pytest side to check against the golden model:

* ``port`` (the bare :class:`~refree.hw.engine.engine.Engine`): its generic memory port,
  in-order responses after a random latency, random command backpressure;
* ``ddr4`` (:class:`~refree.verif.lrdimm_top.LrdimmSimTop`, the whole buffer chip on R
  DDR4 ranks): one :class:`~refree.verif.ddr4_device.PinDevice` per rank behind the
  command pins, every command checked against the timing rules, and a
  :class:`~refree.verif.host_driver.HostDriver` on the host pins that programs each job
  through the NMP window, polls STATUS and reads the registers back; optionally it loads the
  memory image through ordinary writes first (else it is preloaded into the DRAM models,
  a backdoor), reads given bursts back through ordinary reads at the end, and sends host
  commands outside the window during the first job (which the chip must refuse).  The
  violations, the ranks' command counts and the window's registers after each job are
  written back too.
"""
import json
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
    """R DDR4 ranks behind the packed pins of :class:`~refree.verif.lrdimm_top.LrdimmSimTop`,
    and the host driver in front of its host pins."""

    def __init__(self, dut, job, image):
        from refree.hw.ddr4 import RankGeometry, speed_grade
        from refree.hw.ddr4.mapping import AddressMapping
        from refree.hw.lrdimm.regmap import WindowParams
        from .ddr4_device import PinDevice
        from .ddr4_model import Ddr4RankModel
        from .host_driver import HostDriver, pins_word
        from .lrdimm_top import CMD_BITS, HOST_WRDATA_EN_BIT, WRDATA_EN_BIT, pin_widths, unpack_pins
        geometry = RankGeometry(*(int(x) for x in job["geometry"]))
        self.mapping = AddressMapping(int(job["ranks"]), int(job["chunk_beats"]), geometry)
        self.timing = timing = speed_grade(str(job["grade"])).timing()
        self.devs = [PinDevice(Ddr4RankModel(timing, geometry)) for _ in range(self.mapping.ranks)]
        self.host = HostDriver(timing, geometry, self.mapping.ranks,
                               WindowParams(*(int(x) for x in job["window"])))
        self.pins_word, self.host_wren_bit = pins_word, HOST_WRDATA_EN_BIT
        if not bool(job["host_load"]):
            for addr, data in image.items():
                rank, bg, ba, row, col = self.mapping.locate(addr)
                self.devs[rank].model.load(bg, ba, row, col, data.to_bytes(64, "little"))
        self.dut = dut
        self.widths, self.unpack = pin_widths(geometry), unpack_pins
        self.cmd_bits, self.wren_bit = CMD_BITS, WRDATA_EN_BIT
        self.driven = (0, 0)
        self.host_driven = None
        # every input driven from the start (Icarus leaves undriven inputs at Z)
        dut.rank_rddata_valid.value = 0
        dut.rank_rddata.value = 0
        dut.host_wrdata.value = 0

    def drive(self, cycle):
        rank, pins, wren, wrdata = self.host.tick(cycle)
        word = self.pins_word(rank, pins, self.mapping.ranks, self.widths) | (wren << self.host_wren_bit)
        if word != self.host_driven:
            self.dut.host_cmd.value = word
            self.host_driven = word
        if wren:
            self.dut.host_wrdata.value = wrdata
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
        valid = int(self.dut.host_rddata_valid.value)
        self.host.receive(cycle, valid, int(self.dut.host_rddata.value) if valid else 0)
        word = int(self.dut.rank_cmd.value)
        wrdata = None
        for i, dev in enumerate(self.devs):
            slot = (word >> (self.cmd_bits * i)) & ((1 << self.cmd_bits) - 1)
            wren = (slot >> self.wren_bit) & 1
            if slot & 1 and not wren and not dev.pending:       # cs_n high, nothing due
                continue
            if wren and wrdata is None:
                wrdata = str(self.dut.rank_wrdata.value)     # MSB first; X where not written
            dev.clock(cycle, self.unpack(slot, self.widths), wren,
                      int(wrdata[len(wrdata) - 512 * (i + 1):len(wrdata) - 512 * i], 2) if wren else 0)

    def outstanding(self):
        return sum(dev.pending for dev in self.devs) + (not self.host.idle)

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
        problems += [f"host: {v}" for v in list(map(str, self.host.violations)) + self.host.errors]
        return {"violations": np.array(problems, dtype=str),
                "refreshes": np.array([dev.model.counters.refreshes for dev in self.devs])}


def _registers_into_bursts(value, regs):
    """{burst: int} of the window with packed ``value`` laid into the registers ``regs``
    (rows of word, width; the value's fields in order, as the register map lists them)."""
    bursts, offset = {}, 0
    for word, width in ((int(w), int(n)) for w, n in regs):
        v = (value >> offset) & ((1 << width) - 1)
        offset += width
        for j in range(-(-width // 32)):
            k, lane = divmod(word + j, 16)
            bursts[k] = bursts.get(k, 0) | (((v >> (32 * j)) & 0xFFFF_FFFF) << (32 * lane))
    return bursts


def _registers_from_bursts(bursts, regs):
    """The packed value of the registers ``regs`` read from ``bursts`` ({burst: int})."""
    value, offset = 0, 0
    for word, width in ((int(w), int(n)) for w, n in regs):
        v = 0
        for j in range(-(-width // 32)):
            k, lane = divmod(word + j, 16)
            v |= ((bursts[k] >> (32 * lane)) & 0xFFFF_FFFF) << (32 * j)
        value |= (v & ((1 << width) - 1)) << offset
        offset += width
    return value


def _word(bursts, word):
    k, lane = divmod(word, 16)
    return (bursts[k] >> (32 * lane)) & 0xFFFF_FFFF


@cocotb.test()
async def run_jobs(dut):
    job = np.load(os.environ["REFREE_JOB"])
    out_path = os.environ["REFREE_OUT"]
    image = {int(a): int.from_bytes(bytes(d), "little") for a, d in zip(job["addrs"], job["data"])}
    configs = job["configs"]
    max_cycles = job["max_cycles"]          # each job's cycle limit (engine_run.cycle_limit)
    io_cycles = int(job["io_cycles"])       # the limit of every other wait (loading, window reads)
    on_host = str(job["memory"]) == "ddr4"
    memory = (DramMemory if on_host else PortMemory)(dut, job, image)
    now = 0

    async def clock():
        """One clock: inputs for it, then its settled outputs into the memory model."""
        nonlocal now
        memory.drive(now)
        await ReadOnly()
        memory.sample(now)
        busy = 0 if on_host else int(dut.busy.value)
        await RisingEdge(dut.clk)
        now += 1
        return busy

    def stop(i, limit, what):
        """Job ``i`` ran past its limit: say which (for the pytest side), then fail."""
        with open(os.path.join(os.path.dirname(out_path), "stopped.json"), "w") as f:
            f.write(json.dumps({"job": i, "limit": limit}))
        raise AssertionError(f"{what} did not finish within {limit} cycles")

    async def until(done, what, limit=io_cycles):
        for _ in range(limit):
            if done():
                return
            await clock()
        raise AssertionError(f"{what} did not happen within {limit} cycles")

    async def bare_job(i, config, max_cycles):
        """The bare engine: configuration and start on its ports, until busy falls."""
        dut.config.value = int(config)
        await clock()
        dut.start.value = 1
        await clock()
        dut.start.value = 0
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
        if cycle >= max_cycles:
            stop(i, max_cycles, "the engine")
        # (a write's data follows its command by CWL clocks)
        await until(lambda: not memory.outstanding(), "the last memory access", 64)
        return int(dut.error.value), int(dut.counters.value), cycle

    host = memory.host if on_host else None
    status_word, control, clear = (int(x) for x in job["control_words"]) if on_host else (0, 0, 0)

    async def read_window(bursts):
        reads = {k: host.window(False, k) for k in bursts}
        await until(lambda: all(a.done for a in reads.values()), "a window read")
        return {k: a.data for k, a in reads.items()}

    async def host_job(i, config, intrude, max_cycles):
        """The chip: the host writes the configuration and CONTROL through the window,
        polls STATUS until the job is over and reads the registers back."""
        host.close_banks()
        for k, v in sorted(_registers_into_bursts(config, job["config_regs"]).items()):
            host.window(True, k, v)
        host.window(True, control // 16, 1 << (32 * (control % 16)))
        host.stop_refresh()
        started = now
        intruders = None
        while True:
            status = _word(await read_window([status_word // 16]), status_word)
            if not status & 1:
                break
            if intrude and intruders is None:   # outside the window, the NMP owning the ranks
                loc = memory.mapping.locate
                intruders = [host.access(False, *loc(int(job["intrude_addr"]))),
                             host.access(True, *loc(int(job["intrude_addr"]) + 1), data=(1 << 512) - 1)]
                for name in ("PREA", "REF", "NOP"):     # ignored by the chip, not counted
                    host.command(name, int(job["window"][0]))
            for _ in range(int(job["poll_gap"])):
                await clock()
            if now - started >= max_cycles:
                stop(i, max_cycles, "the job")
        cycles = now - started
        host.resume_refresh(now)
        host.close_banks()          # the rows the host had open are closed now
        bursts = await read_window(range(int(job["map_bursts"])))
        result = {"bursts": [str(bursts[k]) for k in sorted(bursts)]}
        if intrude:
            result["intrude_read"] = str(intruders[0].data)
            host.window(True, clear // 16, 1 << (32 * (clear % 16)))
            result["after_clear"] = str(_word(await read_window([status_word // 16]), status_word))
        error = (status >> 8) & 0xFF
        return error, _registers_from_bursts(bursts, job["counter_regs"]), cycles, result

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    if not on_host:
        dut.start.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    if on_host and bool(job["host_load"]):      # the memory image through ordinary writes
        for addr, value in sorted(image.items()):
            host.access(True, *memory.mapping.locate(addr), data=value)
        await until(lambda: host.idle, "loading the memory image")

    errors, counters, cycles, dram, windows, spans = [], [], [], [], [], []
    for i, config in enumerate(configs):
        before = memory.counts()
        first = now
        if on_host:
            error, value, cycle, window = await host_job(i, int(str(config)), i == 0 and bool(job["intrude"]),
                                                         int(max_cycles[i]))
            windows.append(window)
        else:
            error, value, cycle = await bare_job(i, int(str(config)), int(max_cycles[i]))
        errors.append(error)
        counters.append(str(value))
        cycles.append(cycle)
        spans.append([first, now])
        if before is not None:
            after = memory.counts()
            dram.append([[a[k] - b[k] for k in sorted(a)] for a, b in zip(after, before)])
        if errors[-1] and not bool(job["go_on"]):
            break
    extra = {}
    if on_host:
        reads = {int(a): host.access(False, *memory.mapping.locate(int(a))) for a in job["readback"]}
        await until(lambda: host.idle, "the host's read-back")
        await until(lambda: not memory.outstanding(), "the last memory access", 64)
        extra["readback"] = np.array([str(reads[a].data) for a in sorted(reads)])
        extra["window_bursts"] = np.array([w["bursts"] for w in windows] or np.zeros((0, 0)), dtype=str)
        if windows and "intrude_read" in windows[0]:
            extra["intrude"] = np.array([windows[0]["intrude_read"], windows[0]["after_clear"]])
    extra.update(memory.finish(now))
    if on_host and os.environ.get("REFREE_TIMELINE"):       # a diagnostic: when the data bus moved
        with open(os.environ["REFREE_TIMELINE"], "a") as f:      # a line per run
            print(json.dumps({"mode": str(job["mode"]), "jobs": spans,
                              "rd": [d.rd_cycles for d in memory.devs],
                              "wr": [d.wr_cycles for d in memory.devs]}), file=f)
    mem = memory.image()
    addrs = np.array(sorted(mem), np.int64)
    data = np.array([list(mem[a].to_bytes(64, "little")) for a in addrs], np.uint8).reshape(-1, 64)
    if dram:
        extra["dram"] = np.array(dram, np.int64)
        extra["dram_fields"] = np.array(sorted(memory.counts()[0]), dtype=str)
    np.savez(out_path, addrs=addrs, data=data, errors=np.array(errors), counters=np.array(counters),
             cycles=np.array(cycles), **extra)
