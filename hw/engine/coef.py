"""Coefficient stage: a stream's payload passes with ``product = fl(a * b)`` attached.

The backward pass of a mean-pooled table needs each key's coefficient ``c' = fl(c *
fl(1/len))`` (docs/design.md section 2) before the sharing scheduler compares coefficients; the
analyzer's members pass through here, one per cycle, with ``a`` = the multiplicity and
``b`` = the bag's rounded reciprocal (or 1, which leaves ``a`` exact).

The multiplier runs free; a member is taken only when its result has a reserved slot in
the output FIFO, and its payload waits in a FIFO beside it, so order is kept and
backpressure never reaches the pipeline.
"""
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.common import check_pipeline
from ..fp.multiplier import Multiplier
from .credits import queue_depth, room

__all__ = ["CoefStage"]


class CoefStage(wiring.Component):
    """See the module docstring.

    Members
    -------
    i : In(stream.Signature({payload, a, b}))
    o : Out(stream.Signature({payload, product}))
    busy : Out(1)       a member inside
    """

    def __init__(self, payload_layout):
        self.latency = len(check_pipeline("Multiplier", Multiplier.STAGES, Multiplier.DEFAULT_PIPELINE, None))
        self.depth = queue_depth(self.latency)
        self.payload_layout = payload_layout
        self.In = data.StructLayout({"payload": payload_layout, "a": 32, "b": 32})
        self.Out = data.StructLayout({"payload": payload_layout, "product": 32})
        super().__init__({"i": In(stream.Signature(self.In)), "o": Out(stream.Signature(self.Out)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        width = data.Layout.cast(self.payload_layout).size
        m.submodules.meta = meta = fifo.SyncFIFOBuffered(width=width, depth=self.depth)
        m.submodules.out = out = fifo.SyncFIFOBuffered(width=self.Out.size, depth=self.depth)
        m.submodules.mul = mul = Multiplier()
        in_flight = Signal(range(self.depth + 1))
        take = self.i.valid & room(out, in_flight)
        done = mul.o.valid
        m.d.comb += [self.i.ready.eq(take), meta.w_en.eq(take), meta.w_data.eq(self.i.payload.payload),
                     mul.i.valid.eq(take), mul.i.payload.a.eq(self.i.payload.a),
                     mul.i.payload.b.eq(self.i.payload.b), mul.o.ready.eq(1),
                     meta.r_en.eq(done), out.w_en.eq(done), out.w_data.eq(Cat(meta.r_data, mul.o.payload)),
                     self.o.valid.eq(out.r_rdy), self.o.payload.eq(out.r_data), out.r_en.eq(self.o.ready),
                     self.busy.eq((in_flight != 0) | (out.level != 0))]
        # (busy by the FIFO's level: its output flag rises a cycle after the write)
        m.d.sync += in_flight.eq(in_flight + take - done)
        return m
