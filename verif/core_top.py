"""A simulation top for :class:`~refree.hw.lrdimm.nmp_core.NmpCore` with the ranks' ports
packed, so that a cocotb testbench reads every rank's command pins in one access per clock
(Python per clock is what limits a cocotb run's speed).

Packed ports, rank ``i`` in slot ``i``:

* ``rank_cmd`` (out, 32 bits a rank): the command pins in the order of
  :data:`refree.hw.ddr4.commands.PINS` from bit 0 (cs_n, act_n, ras_n, cas_n, we_n, bg, ba,
  a), then ``wrdata_en`` at bit :data:`WRDATA_EN_BIT`;
* ``rank_wrdata`` (out, 512 bits a rank), ``rank_rddata`` (in, 512 bits a rank),
  ``rank_rddata_valid`` (in, a bit a rank).
"""
from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from refree.hw.ddr4.commands import PINS
from refree.hw.ddr4.rank_controller import BURST_BITS
from refree.hw.lrdimm.nmp_core import NmpCore

__all__ = ["CoreSimTop", "CMD_BITS", "WRDATA_EN_BIT", "unpack_pins"]

CMD_BITS = 32
WRDATA_EN_BIT = 31


def pin_widths(geometry):
    bg = max(1, (geometry.bank_groups - 1).bit_length())
    ba = max(1, (geometry.banks_per_group - 1).bit_length())
    return dict(zip(PINS, (1, 1, 1, 1, 1, bg, ba, 18)))


def unpack_pins(word, widths):
    """{pin: level} of one rank's ``rank_cmd`` slot."""
    out, pos = {}, 0
    for name, w in widths.items():
        out[name] = (word >> pos) & ((1 << w) - 1)
        pos += w
    return out


class CoreSimTop(wiring.Component):
    def __init__(self, *args, **kwargs):
        self.core = NmpCore(*args, **kwargs)
        c, R = self.core, self.core.mapping.ranks
        self.Config, self.Counters = c.engine.Config, c.engine.Counters
        self.pin_widths = pin_widths(c.mapping.geometry)
        assert sum(self.pin_widths.values()) <= WRDATA_EN_BIT
        super().__init__({
            "start": In(1), "config": In(c.config.shape()), "busy": Out(1), "error": Out(8),
            "counters": Out(c.counters.shape()), "dram_stats": Out(c.dram_stats.shape()),
            "dram_idle": Out(1), "dram_all_closed": Out(1),
            "rank_cmd": Out(CMD_BITS * R), "rank_wrdata": Out(BURST_BITS * R),
            "rank_rddata": In(BURST_BITS * R), "rank_rddata_valid": In(R)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = c = self.core
        m.d.comb += [c.start.eq(self.start), c.config.eq(self.config), self.busy.eq(c.busy),
                     self.error.eq(c.error), self.counters.eq(c.counters),
                     self.dram_stats.eq(c.dram_stats), self.dram_idle.eq(c.dram_idle),
                     self.dram_all_closed.eq(c.dram_all_closed)]
        for i, r in enumerate(c.ranks()):
            pins = Cat(*[getattr(r, p) for p in PINS])
            m.d.comb += [self.rank_cmd[CMD_BITS * i:CMD_BITS * (i + 1)].eq(pins),
                         self.rank_cmd[CMD_BITS * i + WRDATA_EN_BIT].eq(r.wrdata_en),
                         self.rank_wrdata[BURST_BITS * i:BURST_BITS * (i + 1)].eq(r.wrdata),
                         r.rddata.eq(self.rank_rddata[BURST_BITS * i:BURST_BITS * (i + 1)]),
                         r.rddata_valid.eq(self.rank_rddata_valid[i])]
        return m
