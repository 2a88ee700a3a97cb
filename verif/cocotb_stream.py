"""cocotb test for the file-driven stream harness (:mod:`refree.verif.stream_harness`).

Python touches the simulation only to start the clock, reset, and wait for ``done``; the
harness streams the operand file through the design. The results are then compared with
the expected file, line by line and bit by bit. The files and counts come from
environment variables set by :class:`~refree.verif.stream_harness.StreamBench`.
"""

import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout


@cocotb.test()
async def stream_file(dut):
    n = int(os.environ["REFREE_N"])
    n_out = int(os.environ["REFREE_NOUT"])
    stall = int(os.environ.get("REFREE_STALL", "0"))
    exp_path = os.environ["REFREE_EXP"]
    out_path = os.environ["REFREE_OUT"]
    report = os.environ["REFREE_REPORT"]

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    t0 = time.perf_counter()
    # Generous bound: every word may wait for both stall generators, plus pipeline fill.
    slack = 1 if stall == 0 else max(2, (256 * 256) // max(1, (256 - stall) ** 2) + 1)
    budget = (max(n, n_out) * slack * 4 + 20000) * 10
    if int(os.environ.get("REFREE_MAX_CYCLES", "0")):
        budget = int(os.environ["REFREE_MAX_CYCLES"]) * 10
    if n_out:
        await with_timeout(RisingEdge(dut.done), budget, "ns")
    sim_s = time.perf_counter() - t0
    cycles = int(dut.cycles.value)
    folder = os.path.dirname(report)
    with open(os.path.join(folder, "cycles.txt"), "w") as f:
        f.write(str(cycles))
    with open(os.path.join(folder, "simtime.txt"), "w") as f:
        f.write(repr(sim_s))
    dut._log.info("%d words in, %d out, %d cycles, %.2f s (%.0f cycles/s)",
                  n, n_out, cycles, sim_s, cycles / max(sim_s, 1e-9))

    with open(exp_path) as f:
        expected = [line.strip().lower() for line in f if line.strip()]
    with open(out_path) as f:
        got = [line.strip().lower() for line in f if line.strip()]
    bad = [i for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    lines = []
    if len(got) != len(expected):
        lines.append(f"count: expected {len(expected)} results, got {len(got)}")
    for i in bad[:20]:
        lines.append(f"{i}: expected {expected[i]} got {got[i]}")
    if lines:
        lines.insert(0, f"{len(bad)} of {len(expected)} results differ")
        with open(report, "w") as f:
            f.write("\n".join(lines) + "\n")
    assert not lines, "\n".join(lines)

