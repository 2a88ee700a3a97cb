"""cocotb test of the engine on generated Verilog: jobs against a memory model.

The pytest side (:mod:`refree.verif.engine_run`) writes the job file: the memory image,
the packed configurations of the jobs to run one after the other (a forward job, then a
backward job, ...) and the memory's latency and backpressure settings.  This module models
the memory port (in-order responses after a random latency, random command backpressure),
runs the jobs, and writes the memory image and each job's error code, counters and cycles
back for the pytest side to check against the golden model.
"""
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


@cocotb.test()
async def run_jobs(dut):
    job = np.load(os.environ["REFREE_JOB"])
    out_path = os.environ["REFREE_OUT"]
    addr_bits = int(job["addr_bits"])
    mem = {int(a): int.from_bytes(bytes(d), "little") for a, d in zip(job["addrs"], job["data"])}
    lat_lo, lat_hi = (int(x) for x in job["latency"])
    ready_p = float(job["ready_p"])
    max_cycles = int(job["max_cycles"])
    rng = random.Random(int(job["seed"]))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.mem__cmd__ready.value = 0
    dut.mem__rsp__valid.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    mask = (1 << addr_bits) - 1
    errors, counters, cycles = [], [], []
    for config in job["configs"]:
        dut.config.value = int(str(config))
        await RisingEdge(dut.clk)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        pending = []                    # [due cycle, data], in order
        cycle = 0
        while cycle < max_cycles:
            ready = rng.random() < ready_p
            dut.mem__cmd__ready.value = int(ready)
            head = bool(pending) and pending[0][0] <= cycle
            dut.mem__rsp__valid.value = int(head)
            if head:
                dut.mem__rsp__payload.value = pending[0][1]
            await ReadOnly()
            if ready and int(dut.mem__cmd__valid.value):
                cmd = int(dut.mem__cmd__payload.value)
                addr, write, data = cmd & mask, (cmd >> addr_bits) & 1, cmd >> (addr_bits + 1)
                if write:
                    mem[addr] = data
                else:
                    pending.append([cycle + rng.randint(lat_lo, lat_hi), mem.get(addr, 0)])
            if head and int(dut.mem__rsp__ready.value):
                pending.pop(0)
            busy = int(dut.busy.value)
            await RisingEdge(dut.clk)
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
        assert not pending, "the engine finished with reads outstanding"
        errors.append(int(dut.error.value))
        counters.append(str(int(dut.counters.value)))
        cycles.append(cycle)
        dut.mem__rsp__valid.value = 0
        if errors[-1]:
            break
    addrs = np.array(sorted(mem), np.int64)
    data = np.array([list(mem[a].to_bytes(64, "little")) for a in addrs], np.uint8).reshape(-1, 64)
    np.savez(out_path, addrs=addrs, data=data, errors=np.array(errors), counters=np.array(counters),
             cycles=np.array(cycles))
