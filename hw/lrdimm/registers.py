"""The register block behind the NMP window: the registers of a
:class:`~refree.hw.lrdimm.regmap.RegisterMap` as 64-byte bursts that the host side reads
and writes.

Reads are combinational (the host side registers the burst on its way out).  A write
changes the writable words of one burst: ``rw`` registers take the word, ``w1`` registers
act on a 1 in bit 0 (``CONTROL``: a start request; ``CLEAR``: clear the refused-command
flag and count), ``ro`` words and padding are ignored.  Configuration writes are ignored
while a job runs (``busy``): the engine works on the configuration it was started with.
"""
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..ddr4.rank_controller import BURST_BITS
from .regmap import IDENT, VERSION, WORDS_PER_BURST

__all__ = ["WindowRegisters", "STATUS_BUSY", "STATUS_ERROR_SHIFT", "STATUS_REFUSED"]

STATUS_BUSY = 1 << 0            # the NMP owns the ranks (take-over, job, hand-back)
STATUS_ERROR_SHIFT = 8          # bits 8-15: the engine's error code of the last job
STATUS_REFUSED = 1 << 16        # sticky: a host command was not executed during a job


class WindowRegisters(wiring.Component):
    """Registers of ``regmap`` (a :class:`RegisterMap` built on the engine's ``Config`` and
    ``Counters`` layouts).

    Members
    -------
    rd_burst : In   burst index in the window;  rd_data : Out(512) its words
    wr_en, wr_burst, wr_data : In   one burst written
    config : Out(Config)            the held configuration
    start : Out(1)                  a 1 written to CONTROL bit 0 (one clock)
    busy : In(1), error : In(8), counters : In(Counters)
    refused : In(1)                 a host command was not executed this clock
    dropped : Out(32)               HOST_DROPPED;  sticky : Out(1)  STATUS bit 16
    """

    def __init__(self, regmap, config_layout, counters_layout):
        self.regmap = regmap
        burst = range(max(2, regmap.bursts))
        super().__init__({
            "rd_burst": In(burst), "rd_data": Out(BURST_BITS),
            "wr_en": In(1), "wr_burst": In(burst), "wr_data": In(BURST_BITS),
            "config": Out(config_layout), "start": Out(1),
            "busy": In(1), "error": In(8), "counters": In(counters_layout), "refused": In(1),
            "dropped": Out(32), "sticky": Out(1)})

    def _field(self, group, path):
        """The bits of configuration or counter field ``path`` (dotted, with ``[i]``)."""
        obj = self.config if group == "config" else self.counters
        for part in path.replace("[", ".[").split("."):
            obj = obj[int(part[1:-1])] if part.startswith("[") else getattr(obj, part)
        return obj.as_value() if hasattr(obj, "as_value") else obj

    def elaborate(self, platform):
        m = Module()
        rm = self.regmap
        words = [C(0, 32)] * (rm.bursts * WORDS_PER_BURST)
        clear = Signal()
        status = Cat(self.busy, C(0, 7), self.error, self.sticky)
        fixed = {"ID": C(IDENT, 32), "VERSION": C(VERSION, 32), "STATUS": status,
                 "HOST_DROPPED": self.dropped}
        for r in rm.registers:
            value = fixed.get(r.name, C(0, 32)) if r.group in ("ident", "control") \
                else self._field(r.group, r.field)
            for j in range(r.words):
                part = value[32 * j:32 * (j + 1)]
                words[r.word + j] = Cat(part, C(0, 32 - len(part))) if len(part) < 32 else part
        bursts = Array(Cat(*words[WORDS_PER_BURST * k:WORDS_PER_BURST * (k + 1)]) for k in range(rm.bursts))
        m.d.comb += self.rd_data.eq(bursts[self.rd_burst])

        def lane(word):
            return self.wr_data[32 * (word % WORDS_PER_BURST):][:32]

        def written(word):
            return self.wr_en & (self.wr_burst == word // WORDS_PER_BURST)

        for r in rm.registers:
            if r.access == "rw":
                field = self._field(r.group, r.field)
                for j in range(r.words):
                    with m.If(written(r.word + j) & ~self.busy):
                        m.d.sync += field[32 * j:32 * (j + 1)].eq(lane(r.word + j))
        m.d.comb += [self.start.eq(written(rm["CONTROL"].word) & lane(rm["CONTROL"].word)[0]),
                     clear.eq(written(rm["CLEAR"].word) & lane(rm["CLEAR"].word)[0])]
        # (a command refused in the clock of a CLEAR counts after it)
        dropped = Mux(clear, 0, self.dropped)
        m.d.sync += [self.sticky.eq((self.sticky & ~clear) | self.refused),
                     self.dropped.eq(dropped + (self.refused & (dropped != 0xFFFF_FFFF)))]
        return m
