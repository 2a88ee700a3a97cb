"""Result splitter: the fold datapath's wide result beats as 64-byte memory beats.

A datapath of ``lanes`` lanes (:class:`.datapath.FoldDatapath`) delivers each final as
``D/lanes`` wide beats of ``32 * lanes`` bits; everything behind it (the divider, the row
updaters, the writer) takes memory beats of 512 bits.  The splitter sends each wide beat as
``lanes/16`` memory beats, lowest lanes first: wide beat ``j`` of a member becomes memory
beats ``j * lanes/16 ..``, ``last`` on the member's last memory beat.

Latency one cycle (the wide beat is registered); throughput one memory beat a cycle (the
next wide beat is taken in the cycle the last part of the current one leaves).  With 16
lanes it is a register stage that passes the beats as they are.  Reset: empty.
"""
from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .memport import BEAT_BITS
from .params import counter_signal

__all__ = ["ResultSplitter"]


class ResultSplitter(wiring.Component):
    """Wide result beats in, memory beats out (see the module docstring).

    Parameters
    ----------
    wide : data.StructLayout
        The datapath's ``Result``: ``{member, beat, data, last}``, ``data`` a multiple of
        512 bits wide.
    beats : int
        Wide beats per row (``FoldDatapath.beats``).

    Members
    -------
    i : In(stream.Signature(wide))
    o : Out(stream.Signature(Result))
        ``Result`` = ``{member, beat, data: 512, last}``, ``beat`` counting memory beats.
    busy : Out(1)
        A wide beat is held.
    """

    def __init__(self, wide, beats):
        width = Shape.cast(wide["data"].shape).width
        if width % BEAT_BITS:
            raise ValueError(f"ResultSplitter needs whole memory beats of {BEAT_BITS} bits, "
                             f"not {width}")
        self.parts = width // BEAT_BITS
        memory_beats = beats * self.parts
        self.Result = data.StructLayout({"member": wide["member"].shape,
                                         "beat": max(1, (memory_beats - 1).bit_length()),
                                         "data": BEAT_BITS, "last": 1})
        super().__init__({"i": In(stream.Signature(wide)), "o": Out(stream.Signature(self.Result)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        held, valid = Signal(self.i.payload.shape()), Signal()
        part = counter_signal(self.parts)
        last_part = part == self.parts - 1
        take = ~valid | self.o.ready & last_part
        m.d.comb += [self.i.ready.eq(take), self.o.valid.eq(valid), self.busy.eq(valid),
                     self.o.payload.member.eq(held.member),
                     self.o.payload.beat.eq(held.beat * self.parts + part),
                     self.o.payload.data.eq(held.data.word_select(part, BEAT_BITS)),
                     self.o.payload.last.eq(held.last & last_part)]
        with m.If(valid & self.o.ready):
            m.d.sync += part.eq(Mux(last_part, 0, part + 1))
        with m.If(take):
            m.d.sync += [valid.eq(self.i.valid), held.eq(self.i.payload)]
        return m
