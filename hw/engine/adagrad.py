"""Row-wise Adagrad update of the backward job: one table row at a time.

For each distinct row the engine sends its merged gradient ``g`` (``D/16`` beats), the row
``E`` (``D/16`` beats) and the memory beat that holds the row's Adagrad state (16 states to a
beat; ``lane`` picks the row's).  The update itself is :class:`~refree.hw.fp.vector.VectorUnit`'s
``ADAGRAD`` operation, exactly docs/design.md section 2 (eight strided sums of squares, their
fixed tree, ``/ D``, ``state += ...``, ``m = fl(lr / fl(sqrt(state) + eps))``,
``E = fma(-m, g, E)``), on ``lanes`` lanes: each 16-lane beat passes as ``16 / lanes``
vector beats.  Out come the ``D/16`` updated row beats, then the state beat with the row's
lane replaced by the new state (the other 15 states as they were read).

Throughput: the vector unit takes one row at a time (about ``D/P + ceil(D/8) * 16 + 160``
cycles at the default latencies); rows are not overlapped.
"""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.vector import VectorOp, VectorUnit

__all__ = ["AdagradUnit"]

BEAT_BITS = 512
LANES = 16


class AdagradUnit(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    dim : int       D, a positive multiple of 16
    lanes : int     P, lanes of the vector unit (a divisor of 16)

    Members
    -------
    lr, eps : In(32)
    g, e : In(stream.Signature(512))          ``D/16`` beats per row each
    state : In(stream.Signature({beat, lane}))  one per row
    out : Out(stream.Signature({data, state, last}))
        ``D/16`` row beats, then the state beat (``state`` and ``last`` set).
    busy : Out(1)
    """

    def __init__(self, dim, lanes=4):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < LANES or dim % LANES:
            raise ValueError(f"AdagradUnit dim must be a positive multiple of {LANES}, not {dim!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1 or LANES % lanes:
            raise ValueError(f"AdagradUnit lanes must divide {LANES}, not {lanes!r}")
        self.dim, self.lanes, self.beats = dim, lanes, dim // LANES
        self.StateIn = data.StructLayout({"beat": BEAT_BITS, "lane": 4})
        self.Out = data.StructLayout({"data": BEAT_BITS, "state": 1, "last": 1})
        super().__init__({
            "lr": In(32), "eps": In(32),
            "g": In(stream.Signature(BEAT_BITS)), "e": In(stream.Signature(BEAT_BITS)),
            "state": In(stream.Signature(self.StateIn)),
            "out": Out(stream.Signature(self.Out)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, beats = self.lanes, self.beats
        S = LANES // P                          # vector beats per memory beat
        W = 32 * P
        m.submodules.vu = vu = VectorUnit(lanes=P, length=self.dim)
        # the state beats read, waiting for their row's result (a row or two in flight)
        m.submodules.old = old = fifo.SyncFIFOBuffered(width=self.StateIn.size, depth=2)

        # ---- in: g and E beats split into vector beats --------------------------------
        j = Signal(range(S))                    # vector beat within the memory beat
        jb = Signal(range(beats))               # memory beat within the row
        row_last = (jb == beats - 1) & (j == S - 1)
        vi = vu.i.payload
        m.d.comb += [
            vu.i.valid.eq(self.g.valid & self.e.valid & self.state.valid & old.w_rdy),
            vi.op.eq(VectorOp.ADAGRAD), vi.last.eq(row_last),
            vi.scalar.eq(self.lr), vi.eps.eq(self.eps),
            vi.state.eq(self.state.payload.beat.word_select(self.state.payload.lane, 32)),
            vi.x.eq(self.g.payload.word_select(j, W)), vi.y.eq(self.e.payload.word_select(j, W)),
        ]
        fire_in = vu.i.valid & vu.i.ready
        with m.If(fire_in):
            m.d.sync += j.eq(Mux(j == S - 1, 0, j + 1))
            with m.If(j == S - 1):
                m.d.comb += [self.g.ready.eq(1), self.e.ready.eq(1)]
                m.d.sync += jb.eq(Mux(jb == beats - 1, 0, jb + 1))
            with m.If(row_last):
                m.d.comb += [self.state.ready.eq(1), old.w_en.eq(1), old.w_data.eq(self.state.payload)]

        # ---- out: vector beats gathered into memory beats, then the state beat ---------
        k = Signal(range(S))
        acc = Signal(BEAT_BITS)
        obuf = Signal(self.Out)
        obuf_valid = Signal()
        state_pending, new_state = Signal(), Signal(32)
        free = ~obuf_valid | self.out.ready
        accept = vu.o.valid & ~state_pending & ((k != S - 1) | free)
        full = Signal(BEAT_BITS)
        m.d.comb += [full.eq(acc), full.word_select(k, W).eq(vu.o.payload.r),
                     vu.o.ready.eq(accept),
                     self.out.valid.eq(obuf_valid), self.out.payload.eq(obuf)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += obuf_valid.eq(0)
        oldv = data.View(self.StateIn, old.r_data)
        with m.If(accept):
            m.d.sync += [acc.eq(full), k.eq(Mux(k == S - 1, 0, k + 1))]
            with m.If(k == S - 1):
                m.d.sync += [obuf_valid.eq(1), obuf.data.eq(full), obuf.state.eq(0), obuf.last.eq(0)]
                with m.If(vu.o.payload.last):
                    m.d.sync += [state_pending.eq(1), new_state.eq(vu.o.payload.state)]
        with m.Elif(state_pending & free):
            beat = Signal(BEAT_BITS)
            m.d.comb += [beat.eq(oldv.beat), beat.word_select(oldv.lane, 32).eq(new_state), old.r_en.eq(1)]
            m.d.sync += [obuf_valid.eq(1), obuf.data.eq(beat), obuf.state.eq(1), obuf.last.eq(1),
                         state_pending.eq(0)]

        # rows inside: taken in (their state beat waits in ``old``) and not yet out
        m.d.comb += self.busy.eq((old.level != 0) | (j != 0) | (jb != 0) | (k != 0) | obuf_valid | state_pending)
        return m
