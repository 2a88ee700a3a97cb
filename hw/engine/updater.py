"""Row updater: the SGD update of table rows, one 512-bit beat (16 binary32 lanes) per cycle.

For each beat, lane by lane, ``E' = fma(-lr, fl(s * g), E)`` (docs/design.md section 2): ``g``
is the merged gradient from the fold datapath (``dedup``, ``refree``: ``s`` = 1) or an
upstream gradient row (``baseline``, per occurrence: ``s`` = 1 for sum pooling, ``fl(1/len)``
for mean, as PyTorch's backward scales by the rounded reciprocal).  ``fl(s * g)`` is
``fma(s, g, -0)``, exact for ``s`` = 1 (``-0`` keeps every ``g``, ``+0`` included).

Two banks of 16 FMAs, each free-running behind an output FIFO whose slots are reserved
when a beat is taken, so backpressure never reaches a pipeline and nothing in flight is
lost.  Throughput: one beat per cycle while ``out`` keeps up.
"""
from amaranth.hdl import C, Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.common import check_pipeline
from ..fp.fma import FusedMultiplyAdd
from .credits import queue_depth, room

__all__ = ["RowUpdater", "FmaBank"]

LANES = 16
BEAT_BITS = 32 * LANES
SIGN = 0x80000000


class FmaBank(wiring.Component):
    """``o = fma(a, b, c)`` lane by lane on 512-bit beats (``a`` one scalar per beat)."""

    def __init__(self, fma_pipeline=None):
        self._fma_pipeline = fma_pipeline
        self.latency = len(check_pipeline("FusedMultiplyAdd", FusedMultiplyAdd.STAGES,
                                          FusedMultiplyAdd.DEFAULT_PIPELINE, fma_pipeline))
        self.depth = queue_depth(self.latency)
        layout = data.StructLayout({"a": 32, "b": BEAT_BITS, "c": BEAT_BITS})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(BEAT_BITS)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.results = res = fifo.SyncFIFOBuffered(width=BEAT_BITS, depth=self.depth)
        in_flight = Signal(range(self.latency + 2))
        take = self.i.valid & room(res, in_flight)
        m.d.comb += self.i.ready.eq(take)
        outs = []
        for k in range(LANES):
            m.submodules[f"fma{k}"] = u = FusedMultiplyAdd(self._fma_pipeline)
            lane = slice(32 * k, 32 * k + 32)
            m.d.comb += [u.i.valid.eq(take), u.i.payload.a.eq(self.i.payload.a),
                         u.i.payload.b.eq(self.i.payload.b[lane]), u.i.payload.c.eq(self.i.payload.c[lane]),
                         u.o.ready.eq(1)]
            outs.append(u.o)
        done = outs[0].valid
        m.d.sync += in_flight.eq(in_flight + take - done)
        m.d.comb += [res.w_en.eq(done), res.w_data.eq(Cat(*[o.payload for o in outs])),
                     self.o.valid.eq(res.r_rdy), self.o.payload.eq(res.r_data), res.r_en.eq(self.o.ready),
                     self.busy.eq((in_flight != 0) | (res.level != 0))]
        # (busy by the FIFO's level: its output flag rises a cycle after the write)
        return m


class RowUpdater(wiring.Component):
    """``out = fma(-lr, fl(s * g), e)`` per lane (see the module docstring).

    Members
    -------
    lr : In(32)             learning rate (binary32), held while beats flow
    g : In(stream.Signature({data, scale}))     gradient beats, each with its ``s``
    e : In(stream.Signature(512))               table-row beats
    out : Out(stream.Signature(512))
    busy : Out(1)
    """

    def __init__(self, fma_pipeline=None):
        self.Grad = data.StructLayout({"data": BEAT_BITS, "scale": 32})
        self._fma_pipeline = fma_pipeline
        super().__init__({"lr": In(32), "g": In(stream.Signature(self.Grad)),
                          "e": In(stream.Signature(BEAT_BITS)),
                          "out": Out(stream.Signature(BEAT_BITS)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.scale = scale = FmaBank(self._fma_pipeline)
        m.submodules.step = step = FmaBank(self._fma_pipeline)
        neg_zero = Cat(*[C(SIGN, 32)] * LANES)
        m.d.comb += [scale.i.valid.eq(self.g.valid), self.g.ready.eq(scale.i.ready),
                     scale.i.payload.a.eq(self.g.payload.scale), scale.i.payload.b.eq(self.g.payload.data),
                     scale.i.payload.c.eq(neg_zero),
                     # the scaled gradient meets its table row
                     step.i.valid.eq(scale.o.valid & self.e.valid),
                     scale.o.ready.eq(step.i.ready & self.e.valid),
                     self.e.ready.eq(step.i.ready & scale.o.valid),
                     step.i.payload.a.eq(self.lr ^ SIGN), step.i.payload.b.eq(scale.o.payload),
                     step.i.payload.c.eq(self.e.payload)]
        wiring.connect(m, step.o, wiring.flipped(self.out))
        m.d.comb += self.busy.eq(scale.busy | step.busy)
        return m
