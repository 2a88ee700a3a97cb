"""Beat packer: 64-byte memory beats in, the fold datapath's wide beats out.

The inverse of :mod:`.result_splitter`: ``parts`` consecutive memory beats make one wide
beat, the first in the lowest lanes (memory beat ``k`` of a row is lanes ``16k ..`` of the
row, whatever the width).  The backward jobs of ``dedup`` and ``refree`` feed the upstream
gradient rows through it (they arrive from memory a beat at a time; the forward job's rows
come from the row store a word at a time).

Throughput: a memory beat in per cycle, so a wide beat out every ``parts`` cycles; latency
one cycle from the last part's arrival to ``o``.  With ``parts`` = 1 it is a wire.  Reset:
empty.
"""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .memport import BEAT_BITS

__all__ = ["BeatPacker"]


class BeatPacker(wiring.Component):
    """Memory beats in, wide beats of ``parts`` memory beats out (see the module docstring).

    Members
    -------
    i : In(stream.Signature(512))
    o : Out(stream.Signature(512 * parts))
    busy : Out(1)           part of a wide beat gathered, or a wide beat held
    """

    def __init__(self, parts):
        if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
            raise ValueError(f"BeatPacker parts must be a positive integer, not {parts!r}")
        self.parts = parts
        super().__init__({"i": In(stream.Signature(BEAT_BITS)),
                          "o": Out(stream.Signature(BEAT_BITS * parts)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        if self.parts == 1:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        word = Signal(BEAT_BITS * self.parts)
        part = Signal(range(self.parts))        # the next memory beat's place in ``word``
        full = Signal()                         # a whole wide beat waits on ``o``
        take = self.i.valid & self.i.ready
        last = part == self.parts - 1
        # (a full word leaves in the cycle the next word's first beat may arrive)
        m.d.comb += [self.i.ready.eq(~full | self.o.ready), self.o.valid.eq(full),
                     self.o.payload.eq(word), self.busy.eq(full | (part != 0))]
        with m.If(take):
            m.d.sync += [word.word_select(part, BEAT_BITS).eq(self.i.payload),
                         part.eq(Mux(last, 0, part + 1))]
        with m.If(take & last):
            m.d.sync += full.eq(1)
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        return m
