# amaranth: UnusedElaboratable=no
"""Row divider: mean pooling's final division, ``pooled = fl(acc / n)`` lane by lane.

Beats (16 binary32 lanes) arrive with a divisor and a ``divide`` flag; a beat without the
flag (sum pooling, or an empty bag, whose +0 stays +0) passes unchanged, in order.  The
``lanes`` dividers (:class:`~refree.hw.fp.divider.Divider`, correctly rounded, fully
pipelined) take ``16 / lanes`` cycles per beat: a generator choice between area and the
rate of the pooled outputs (one beat per cycle at 16 lanes).

The dividers run free (never stalled): a beat is taken only when its result has a reserved
slot in the output FIFO, so backpressure on ``o`` never reaches them.
"""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.divider import Divider
from .credits import queue_depth, room

__all__ = ["RowDivider"]

LANES = 16
BEAT_BITS = 32 * LANES


class RowDivider(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    lanes : int         dividers, a divisor of 16
    tag_bits : int      width of ``tag``, passed through with each beat

    Members
    -------
    i : In(stream.Signature({data, divisor, divide, tag}))
    o : Out(stream.Signature({data, tag}))
    busy : Out(1)       a beat inside
    """

    def __init__(self, lanes=4, tag_bits=1):
        if lanes not in (1, 2, 4, 8, 16):
            raise ValueError(f"RowDivider lanes must divide 16 (1, 2, 4, 8 or 16), not {lanes!r}")
        self.lanes, self.steps = lanes, LANES // lanes
        self.latency = Divider().latency
        self.In = data.StructLayout({"data": BEAT_BITS, "divisor": 32, "divide": 1, "tag": tag_bits})
        self.Out = data.StructLayout({"data": BEAT_BITS, "tag": tag_bits})
        # (a beat in flight for latency + steps cycles, a beat taken every steps cycles)
        self.depth = queue_depth(-(-(self.latency + self.steps) // self.steps))
        super().__init__({"i": In(stream.Signature(self.In)), "o": Out(stream.Signature(self.Out)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        P, K = self.lanes, self.steps
        # Beats in flight keep their input (for a passed beat) and tag here, in order.
        m.submodules.meta = meta = fifo.SyncFIFOBuffered(width=self.Out.size + 1, depth=self.depth)
        m.submodules.out = out = fifo.SyncFIFOBuffered(width=self.Out.size, depth=self.depth)
        in_flight = Signal(range(self.depth + 1))

        # Sequencer: the current beat feeds its K groups of P lanes, one group per cycle.
        cur = Signal(self.In)
        step = Signal(range(K + 1))             # groups left of the current beat
        last_step = step <= 1
        take = self.i.valid & room(out, in_flight) & meta.w_rdy & last_step
        m.d.comb += [self.i.ready.eq(take),
                     meta.w_en.eq(take),
                     meta.w_data.eq(Cat(self.i.payload.data, self.i.payload.tag, self.i.payload.divide))]
        with m.If(take):
            m.d.sync += [cur.eq(self.i.payload), step.eq(K)]
        with m.Elif(step != 0):
            m.d.sync += step.eq(step - 1)
        group = Signal(range(K))
        m.d.comb += group.eq(K - step)
        lanes_in = [cur.data[32 * k:32 * (k + 1)] for k in range(LANES)]

        done = Signal()
        results = []
        for j in range(P):
            m.submodules[f"div{j}"] = d = Divider()
            a = Signal(32, name=f"dividend{j}")
            with m.Switch(group):
                for g in range(K):
                    with m.Case(g):
                        m.d.comb += a.eq(lanes_in[g * P + j])
            m.d.comb += [d.i.valid.eq(step != 0), d.i.payload.a.eq(a), d.i.payload.b.eq(cur.divisor),
                         d.o.ready.eq(1)]
            results.append(d.o)

        # Assembly: K groups of results make a beat, in order.
        got = Signal(range(K))
        beat = Signal(BEAT_BITS)
        lane_results = Cat(*[r.payload for r in results])
        with m.If(results[0].valid):
            for g in range(K):
                with m.If(got == g):
                    m.d.sync += beat[32 * P * g:32 * P * (g + 1)].eq(lane_results)
            m.d.sync += got.eq(Mux(got == K - 1, 0, got + 1))
            m.d.comb += done.eq(got == K - 1)
        full = Signal(BEAT_BITS)
        m.d.comb += full.eq(beat)
        if K == 1:
            m.d.comb += full.eq(lane_results)
        else:
            m.d.comb += full[32 * P * (K - 1):].eq(lane_results)
        head_data = meta.r_data[:BEAT_BITS]
        head_tag = meta.r_data[BEAT_BITS:self.Out.size]
        head_divide = meta.r_data[self.Out.size]
        m.d.comb += [out.w_en.eq(done), meta.r_en.eq(done),
                     out.w_data.eq(Cat(Mux(head_divide, full, head_data), head_tag))]
        m.d.sync += in_flight.eq(in_flight + take - done)
        m.d.comb += [self.o.valid.eq(out.r_rdy), self.o.payload.eq(out.r_data), out.r_en.eq(self.o.ready),
                     self.busy.eq((in_flight != 0) | (out.level != 0) | (step != 0))]
        # (busy by the FIFO's level: its output flag rises a cycle after the write)
        return m
