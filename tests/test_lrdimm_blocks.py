"""Blocks of the buffer chip's host side in Amaranth's simulator: the hand-over sequence
(hw/lrdimm/ownership.py) and the window's register block (hw/lrdimm/registers.py)."""
import pytest
from amaranth.hdl import Const
from amaranth.lib import data
from amaranth.sim import Simulator

from refree.hw.ddr4 import speed_grade
from refree.hw.lrdimm.ownership import Ownership, guard_clocks, handover_clocks
from refree.hw.lrdimm.registers import STATUS_BUSY, STATUS_REFUSED, WindowRegisters
from refree.hw.lrdimm.regmap import IDENT, RegisterMap
from refree.verif.ddr4_model import Ddr4RankModel

TIMING = speed_grade("DDR4-2400").timing()


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-9)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("last", ["ACT", "WR", "RD", "REF"])
def test_hand_over_is_legal_after_any_last_host_command(last):
    """The host's last command comes in the clock of the start request (the worst case);
    the take-over's PREA and REF and the NMP's first ACT break no rule, and so does the
    hand-back after the NMP's own last command; busy covers both sequences exactly."""
    dut = Ownership(TIMING)
    model = Ddr4RankModel(TIMING)
    seen = {}

    async def bench(ctx):
        host = {"ACT": [("ACT", 0, 0, 5)], "WR": [("ACT", 0, 0, 5), ("WR", 0, 0, 0)],
                "RD": [("ACT", 0, 0, 5), ("RD", 0, 0, 0)], "REF": [("REF",)]}[last]
        cycle = 0
        for cmd in host:        # the host's commands, as early as their rules allow
            cycle = max(cycle, model.earliest(cmd[0], *cmd[1:3]))
            model.issue(cycle, cmd[0], *cmd[1:]) if cmd[0] != "WR" else model.wr(cycle, 0, 0, 0, bytes(64))
            for _ in range(cycle - seen.get("now", 0)):
                await ctx.tick()
            seen["now"] = cycle
        ctx.set(dut.request, 1)
        await ctx.tick()
        ctx.set(dut.request, 0)
        now, first = cycle + 1, None
        while first is None or now < first + 10:
            assert ctx.get(dut.owned)
            if ctx.get(dut.prea):
                model.prea(now)
            if ctx.get(dut.ref):
                model.ref(now)
            if ctx.get(dut.engine_start):
                first = now + 1
                assert ctx.get(dut.hold)
            if first is not None and now >= first:
                assert ctx.get(dut.nmp_drives) and not ctx.get(dut.hold)
            await ctx.tick()
            now += 1
        assert first - cycle == handover_clocks(TIMING)
        # the NMP's first command, at once: an ACT; then a write, and the job ends after it
        model.act(first, 1, 2, 9)
        wr = model.earliest("WR", 1, 2)
        model.wr(wr, 1, 2, 0, bytes(64))
        while now <= wr:
            await ctx.tick()
            now += 1
        ctx.set(dut.job_idle, 1)
        end = now
        while ctx.get(dut.owned):
            if now > end:   # (the clock job_idle is seen, the NMP still drives)
                assert ctx.get(dut.hold) and not ctx.get(dut.nmp_drives)
            if ctx.get(dut.prea):
                model.prea(now)
            if ctx.get(dut.ref):
                model.ref(now)
            await ctx.tick()
            now += 1
        seen["back"] = now - end

    simulate(dut, bench)
    assert not model.violations, model.violations
    assert model.counters.refreshes == 2 + (last == "REF")
    assert seen["back"] == handover_clocks(TIMING)
    assert guard_clocks(TIMING) > TIMING.tRFC


def test_the_register_map_states_the_staging_stripe():
    """The documents of the register map say the stripe of the pooled and gradient rows the
    host must lay out by; a stripe that is no power of two is refused."""
    config = data.StructLayout({"a": 8})
    counters = data.StructLayout({"cycles": 48})
    rm = RegisterMap(config, counters, staging_stripe=4)
    assert "#define REFREE_STAGING_STRIPE 4u" in rm.c_header()
    assert "S = 4." in rm.markdown()
    assert "#define REFREE_STAGING_STRIPE 1u" in RegisterMap(config, counters).c_header()
    for bad in (0, 3, True, "4"):
        with pytest.raises(ValueError, match="staging stripe"):
            RegisterMap(config, counters, staging_stripe=bad)


def test_window_registers():
    """Reads give ID, the held configuration and live counters; writes change rw words only,
    and not while busy; CONTROL starts, a refused command sets the sticky flag and counts,
    CLEAR clears them (a command refused in the CLEAR's clock counts after it)."""
    config = data.StructLayout({"a": 8, "b": 40, "c": data.ArrayLayout(16, 2)})
    counters = data.StructLayout({"cycles": 48, "adds": 32})
    rm = RegisterMap(config, counters)
    dut = WindowRegisters(rm, config, counters)

    def burst(words):
        v = 0
        for w, x in words.items():
            assert w // 16 == next(iter(words)) // 16
            v |= x << (32 * (w % 16))
        return v

    def word(value, w):
        return (value >> (32 * (w % 16))) & 0xFFFF_FFFF

    async def bench(ctx):
        async def write(words):
            k = next(iter(words)) // 16
            ctx.set(dut.wr_en, 1)
            ctx.set(dut.wr_burst, k)
            ctx.set(dut.wr_data, burst(words))
            started = ctx.get(dut.start)
            await ctx.tick()
            ctx.set(dut.wr_en, 0)
            return started

        def read(w):
            ctx.set(dut.rd_burst, w // 16)
            return word(ctx.get(dut.rd_data), w)

        assert read(rm["ID"].word) == IDENT
        b = rm["CONFIG_B"].word
        await write({rm["CONFIG_A"].word: 0x1FF, b: 0xDEADBEEF, b + 1: 0x1234, rm["CONFIG_C_1"].word: 7})
        assert ctx.get(dut.config.as_value()) == Const.cast(config.const({"a": 0xFF, "b": 0x34DEADBEEF, "c": [0, 7]})).value
        assert read(b) == 0xDEADBEEF and read(b + 1) == 0x34
        ctx.set(dut.counters, {"cycles": 1 << 40 | 5, "adds": 9})
        assert read(rm["COUNTERS_CYCLES"].word + 1) == 1 << 8 and read(rm["COUNTERS_ADDS"].word) == 9
        await write({rm["COUNTERS_ADDS"].word: 1})          # read-only: no effect (and no error)
        ctx.set(dut.busy, 1)
        await write({rm["CONFIG_A"].word: 3})               # ignored while busy
        assert read(rm["CONFIG_A"].word) == 0xFF
        assert read(rm["STATUS"].word) & STATUS_BUSY
        ctx.set(dut.busy, 0)
        assert await write({rm["CONTROL"].word: 1})
        assert not await write({rm["CONTROL"].word: 2})
        ctx.set(dut.refused, 1)
        for _ in range(3):
            await ctx.tick()
        ctx.set(dut.refused, 0)
        ctx.set(dut.error, 0x21)
        assert read(rm["HOST_DROPPED"].word) == 3
        assert read(rm["STATUS"].word) == STATUS_REFUSED | 0x21 << 8
        await write({rm["CLEAR"].word: 1})
        assert read(rm["HOST_DROPPED"].word) == 0 and read(rm["STATUS"].word) == 0x21 << 8
        ctx.set(dut.refused, 1)                             # in the clock of a CLEAR: counts
        await write({rm["CLEAR"].word: 1})
        ctx.set(dut.refused, 0)
        assert read(rm["HOST_DROPPED"].word) == 1 and read(rm["STATUS"].word) & STATUS_REFUSED

    simulate(dut, bench)
