"""A simulation top for :class:`~refree.hw.lrdimm.lrdimm_nmp.LrdimmNmp` with its ports packed,
so that a cocotb testbench reads or writes each side's pins in one access per clock (Python
per clock is what limits a cocotb run's speed).

Host side:

* ``host_cmd`` (in, 64 bits): ``cs_n`` (a bit per rank) from bit 0, then the other command
  pins in the order of :data:`refree.hw.ddr4.commands.PINS` (act_n, ras_n, cas_n, we_n, bg,
  ba, a), and ``wrdata_en`` at bit :data:`HOST_WRDATA_EN_BIT`;
* ``host_wrdata`` (in, 512 bits), ``host_rddata`` (out, 512 bits), ``host_rddata_valid`` (out).

DRAM side, rank ``i`` in slot ``i``:

* ``rank_cmd`` (out, 32 bits a rank): the command pins in the order of :data:`PINS` from
  bit 0, then ``wrdata_en`` at bit :data:`WRDATA_EN_BIT`;
* ``rank_wrdata`` (out, 512 bits a rank), ``rank_rddata`` (in, 512 bits a rank),
  ``rank_rddata_valid`` (in, a bit a rank).
"""
from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from refree.hw.ddr4.commands import PINS
from refree.hw.ddr4.rank_controller import BURST_BITS
from refree.hw.lrdimm.lrdimm_nmp import LrdimmNmp

__all__ = ["LrdimmSimTop", "CMD_BITS", "WRDATA_EN_BIT", "HOST_CMD_BITS", "HOST_WRDATA_EN_BIT",
           "pin_widths", "unpack_pins"]

CMD_BITS = 32
WRDATA_EN_BIT = 31
HOST_CMD_BITS = 64
HOST_WRDATA_EN_BIT = 63


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


class LrdimmSimTop(wiring.Component):
    def __init__(self, *args, **kwargs):
        self.chip = c = LrdimmNmp(*args, **kwargs)
        R = c.mapping.ranks
        self.Config, self.Counters = c.core.Config, c.core.Counters
        self.regmap = c.regmap
        self.pin_widths = pin_widths(c.mapping.geometry)
        assert sum(self.pin_widths.values()) <= WRDATA_EN_BIT
        assert R + sum(self.pin_widths.values()) - 1 <= HOST_WRDATA_EN_BIT
        super().__init__({
            "host_cmd": In(HOST_CMD_BITS, init=(1 << R) - 1), "host_wrdata": In(BURST_BITS),
            "host_rddata": Out(BURST_BITS), "host_rddata_valid": Out(1),
            "rank_cmd": Out(CMD_BITS * R), "rank_wrdata": Out(BURST_BITS * R),
            "rank_rddata": In(BURST_BITS * R), "rank_rddata_valid": In(R)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.chip = c = self.chip
        h = c.host
        host_pins = Cat(h.cs_n, *[getattr(h, p) for p in PINS[1:]])
        m.d.comb += [host_pins.eq(self.host_cmd), h.wrdata_en.eq(self.host_cmd[HOST_WRDATA_EN_BIT]),
                     h.wrdata.eq(self.host_wrdata), self.host_rddata.eq(h.rddata),
                     self.host_rddata_valid.eq(h.rddata_valid)]
        for i, r in enumerate(c.ranks()):
            pins = Cat(*[getattr(r, p) for p in PINS])
            m.d.comb += [self.rank_cmd[CMD_BITS * i:CMD_BITS * (i + 1)].eq(pins),
                         self.rank_cmd[CMD_BITS * i + WRDATA_EN_BIT].eq(r.wrdata_en),
                         self.rank_wrdata[BURST_BITS * i:BURST_BITS * (i + 1)].eq(r.wrdata),
                         r.rddata.eq(self.rank_rddata[BURST_BITS * i:BURST_BITS * (i + 1)]),
                         r.rddata_valid.eq(self.rank_rddata_valid[i])]
        return m
