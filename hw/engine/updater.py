"""Row updater: the SGD update of table rows, one 512-bit beat (16 binary32 lanes) per cycle.

For each beat, lane by lane, ``E' = fma(-lr, g, E)`` (DESIGN.md section 2: the SGD step
of ``baseline`` per occurrence, of ``dedup`` and ``refree`` per distinct row with its
merged gradient).  ``g`` and ``E`` arrive on two streams (the merged gradient from the fold
datapath or an upstream gradient row, the table row from memory) and are paired beat by
beat; the updated beat leaves on ``out``.

The 16 FMAs run free (never stalled).  A beat is taken only when its result has a reserved
slot in the output FIFO, so backpressure on ``out`` never reaches the pipeline and nothing
in flight is lost.  Throughput: one beat per cycle while ``out`` keeps up.
"""
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.common import check_pipeline
from ..fp.fma import FusedMultiplyAdd

__all__ = ["RowUpdater"]

LANES = 16
BEAT_BITS = 32 * LANES
SIGN = 0x80000000


class RowUpdater(wiring.Component):
    """``out = fma(-lr, g, e)`` per lane (see the module docstring).

    Members
    -------
    lr : In(32)             learning rate (binary32), held while beats flow
    g, e : In(stream.Signature(512))
    out : Out(stream.Signature(512))
    busy : Out(1)           a beat in the FMAs or the output FIFO
    """

    def __init__(self, fma_pipeline=None):
        self._fma_pipeline = fma_pipeline
        self.latency = len(check_pipeline("FusedMultiplyAdd", FusedMultiplyAdd.STAGES,
                                          FusedMultiplyAdd.DEFAULT_PIPELINE, fma_pipeline))
        self.depth = self.latency + 3
        super().__init__({"lr": In(32), "g": In(stream.Signature(BEAT_BITS)),
                          "e": In(stream.Signature(BEAT_BITS)),
                          "out": Out(stream.Signature(BEAT_BITS)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        L = self.latency
        m.submodules.results = res = fifo.SyncFIFOBuffered(width=BEAT_BITS, depth=self.depth)
        in_flight = Signal(range(L + 2))
        take = self.g.valid & self.e.valid & (res.level + in_flight < self.depth - 1)
        done = Signal()
        m.d.comb += [self.g.ready.eq(take), self.e.ready.eq(take)]
        m.d.sync += in_flight.eq(in_flight + take - done)
        outs = []
        for k in range(LANES):
            m.submodules[f"fma{k}"] = u = FusedMultiplyAdd(self._fma_pipeline)
            lane = slice(32 * k, 32 * k + 32)
            m.d.comb += [u.i.valid.eq(take), u.i.payload.a.eq(self.lr ^ SIGN),
                         u.i.payload.b.eq(self.g.payload[lane]), u.i.payload.c.eq(self.e.payload[lane]),
                         u.o.ready.eq(1)]
            outs.append(u.o)
        m.d.comb += [done.eq(outs[0].valid), res.w_en.eq(done),
                     res.w_data.eq(Cat(*[o.payload for o in outs])),
                     self.out.valid.eq(res.r_rdy), self.out.payload.eq(res.r_data), res.r_en.eq(self.out.ready),
                     self.busy.eq((in_flight != 0) | res.r_rdy)]
        return m
