# amaranth: UnusedElaboratable=no
"""P-lane binary32 vector unit: element-wise operations on beats of P lanes.

A standalone unit (``refree synth`` and ``make bench-fp`` measure it): the engine's fold
datapath, row updater, row divider and Adagrad unit have lanes of their own."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import check_dsp
from .divider import Divider
from .fma import FusedMultiplyAdd

__all__ = ["VectorOp", "VectorUnit", "vector_in_layout", "vector_out_layout"]

ONE = 0x3F800000
NEG_ZERO = 0x80000000


class VectorOp(enum.Enum, shape=3):
    """Operations of :class:`VectorUnit` (``s`` is the beat's ``scalar``)."""
    COPY = 0      #: r = x (bit for bit, NaN payloads too)
    ADD = 1       #: r = fl(x + y)              (as fma(x, 1, y))
    MUL = 2       #: r = fl(s * x)              (as fma(s, x, -0))
    FMA = 3       #: r = fma(s, x, y)
    DIV = 4       #: r = fl(x / s)
    SGD = 5       #: r = fma(-s, x, y)          (x = g, y = E, s = lr)


def vector_in_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "op": VectorOp, "last": 1, "scalar": 32,
        "x": data.ArrayLayout(32, lanes), "y": data.ArrayLayout(32, lanes)})


def vector_out_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"r": data.ArrayLayout(32, lanes), "last": 1})


class _Fifo(wiring.Component):
    """First-word-fall-through FIFO like ``SyncFIFOBuffered`` (same ports), with its
    storage in distributed (LUT) RAM: ECP5 block RAM without its output register has a
    clock-to-output time of over 5 ns, too slow for the unit's output logic."""

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({"w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
                          "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        inner = self.depth - 1
        storage = Memory(shape=self.width, depth=inner, init=[],
                         attrs={"ram_style": "distributed"})
        m.submodules.storage = storage
        w_port = storage.write_port()
        r_port = storage.read_port(domain="sync")
        level = Signal(range(inner + 1))
        produce = Signal(range(inner))
        consume = Signal(range(inner))
        inner_rdy = level != 0
        do_write = self.w_en & self.w_rdy
        do_read = inner_rdy & (~self.r_rdy | self.r_en)
        m.d.comb += [
            self.w_rdy.eq(level != inner),
            w_port.addr.eq(produce), w_port.data.eq(self.w_data), w_port.en.eq(do_write),
            r_port.addr.eq(consume), r_port.en.eq(do_read), self.r_data.eq(r_port.data),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == inner - 1, 0, produce + 1))
        with m.If(do_read):
            m.d.sync += consume.eq(Mux(consume == inner - 1, 0, consume + 1))
        m.d.sync += level.eq(level + do_write - do_read)
        with m.If(do_read):
            m.d.sync += self.r_rdy.eq(1)
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m


class VectorUnit(wiring.Component):
    """P lanes of binary32 arithmetic: the element-wise operations of :class:`VectorOp`.

    Each beat of P lanes (``x``, ``y`` and a ``scalar``) gives one beat of P results. Every
    lane has a :class:`~.fma.FusedMultiplyAdd` (which also computes add as ``fma(x, 1, y)``
    and multiply as ``fma(s, x, -0)``, both exactly the correctly rounded sum and product)
    and a :class:`~.divider.Divider`; copies bypass both. The units run free (never
    stalled): each path writes a FIFO of ``fifo_depth`` entries, an order FIFO records which
    path each beat took, and a beat is accepted only when a result slot is reserved for it,
    so results leave in order and backpressure never reaches the pipelines. A run of one
    operation sustains one beat per cycle; switching between paths of different latency
    may insert bubbles. (Row-wise Adagrad is the engine's own unit,
    :class:`refree.hw.engine.adagrad.AdagradUnit`: rows pipelined on shared FMA lanes.)

    Parameters
    ----------
    lanes : int
        P, lanes per beat (>= 1).
    fifo_depth : int, optional
        Result slots (default: the divider latency + 4, enough for one beat per cycle).
    dsp : str
        Multiplier implementation of the FMAs: ``"generic"`` or ``"ecp5"`` (see
        :class:`~.fma.FusedMultiplyAdd`).

    Members
    -------
    i : In(stream.Signature(vector_in_layout(lanes)))
        ``op``, ``last`` (passed through, per beat), ``scalar``, ``x[P]``, ``y[P]``.
    o : Out(stream.Signature(vector_out_layout(lanes)))
        ``r[P]``, ``last``.

    Reset empties the unit (results in flight are dropped).
    """

    def __init__(self, lanes=4, fifo_depth=None, dsp="generic"):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"Lane count must be a positive integer, not {lanes!r}")
        self.dsp = check_dsp("VectorUnit", dsp)
        self.lanes = lanes
        minimum = max(FusedMultiplyAdd(dsp=dsp).latency, Divider().latency) + 4
        if fifo_depth is None:
            fifo_depth = minimum
        if not isinstance(fifo_depth, int) or fifo_depth < 3:
            raise ValueError(f"FIFO depth must be an integer of at least 3, not "
                             f"{fifo_depth!r}")
        self.fifo_depth = fifo_depth
        super().__init__({
            "i": In(stream.Signature(vector_in_layout(lanes))),
            "o": Out(stream.Signature(vector_out_layout(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        P, Q = self.lanes, self.fifo_depth
        lane_w = 32 * P

        # ================= result paths: lanes -> FIFOs, order FIFO ====================
        PATH_FMA, PATH_DIV, PATH_COPY = 0, 1, 2
        fifos = []
        for k, name in enumerate(("fma", "div", "copy")):
            f = _Fifo(width=lane_w, depth=Q)
            m.submodules[f"{name}_fifo"] = f
            fifos.append(f)
        order = _Fifo(width=2 + 1, depth=Q)
        m.submodules.order_fifo = order

        # credits: beats accepted and not yet delivered
        count = Signal(range(Q + 1))
        can_issue = Signal(init=1)
        issue, delivered = Signal(), Signal()
        count_next = Signal(range(Q + 1))
        m.d.comb += count_next.eq(count + issue - delivered)
        m.d.sync += [count.eq(count_next), can_issue.eq(count_next < Q)]   # a register

        # ================= issue: the beat's operands by operation =======================
        i_p, op = self.i.payload, self.i.payload.op
        s = i_p.scalar
        neg_s = Cat(s[:31], ~s[31])
        issue_path = Signal(2)
        fma_a = Signal(data.ArrayLayout(32, P))
        fma_b = Signal(data.ArrayLayout(32, P))
        fma_c = Signal(data.ArrayLayout(32, P))
        m.d.comb += [self.i.ready.eq(can_issue), issue.eq(self.i.valid & can_issue)]
        with m.Switch(op):
            with m.Case(VectorOp.COPY):
                m.d.comb += issue_path.eq(PATH_COPY)
            with m.Case(VectorOp.DIV):
                m.d.comb += issue_path.eq(PATH_DIV)
            with m.Default():
                m.d.comb += issue_path.eq(PATH_FMA)
        for lane in range(P):
            x, y = i_p.x[lane], i_p.y[lane]
            with m.Switch(op):
                with m.Case(VectorOp.ADD):
                    m.d.comb += [fma_a[lane].eq(x), fma_b[lane].eq(ONE), fma_c[lane].eq(y)]
                with m.Case(VectorOp.MUL):
                    m.d.comb += [fma_a[lane].eq(s), fma_b[lane].eq(x), fma_c[lane].eq(NEG_ZERO)]
                with m.Case(VectorOp.SGD):
                    m.d.comb += [fma_a[lane].eq(neg_s), fma_b[lane].eq(x), fma_c[lane].eq(y)]
                with m.Default():
                    m.d.comb += [fma_a[lane].eq(s), fma_b[lane].eq(x), fma_c[lane].eq(y)]

        # one register between the operand muxes and the lanes (free running: nothing
        # downstream ever stalls)
        lane_fma = Signal(name="lane_fma_valid")
        lane_div = Signal(name="lane_div_valid")
        m.d.sync += [lane_fma.eq(issue & (issue_path == PATH_FMA)),
                     lane_div.eq(issue & (issue_path == PATH_DIV))]
        regs_in = {}
        for name, sig in (("fma_a", fma_a), ("fma_b", fma_b), ("fma_c", fma_c),
                          ("div_a", i_p.x), ("div_b", s)):
            r = Signal.like(sig, name=f"lane_{name}", reset_less=True)
            m.d.sync += r.eq(sig)
            regs_in[name] = r

        fma_valid = Signal()
        div_valid = Signal()
        fma_out, div_out = [], []
        for lane in range(P):
            fu = FusedMultiplyAdd(dsp=self.dsp)
            du = Divider()
            m.submodules[f"fma{lane}"] = fu
            m.submodules[f"div{lane}"] = du
            m.d.comb += [
                fu.i.valid.eq(lane_fma),
                fu.i.payload.a.eq(regs_in["fma_a"][lane]),
                fu.i.payload.b.eq(regs_in["fma_b"][lane]),
                fu.i.payload.c.eq(regs_in["fma_c"][lane]), fu.o.ready.eq(1),
                du.i.valid.eq(lane_div),
                du.i.payload.a.eq(regs_in["div_a"][lane]), du.i.payload.b.eq(regs_in["div_b"]),
                du.o.ready.eq(1),
            ]
            fma_out.append(fu.o.payload)
            div_out.append(du.o.payload)
            if lane == 0:
                m.d.comb += [fma_valid.eq(fu.o.valid), div_valid.eq(du.o.valid)]
        m.d.comb += [
            fifos[PATH_FMA].w_en.eq(fma_valid), fifos[PATH_FMA].w_data.eq(Cat(*fma_out)),
            fifos[PATH_DIV].w_en.eq(div_valid), fifos[PATH_DIV].w_data.eq(Cat(*div_out)),
            fifos[PATH_COPY].w_en.eq(issue & (issue_path == PATH_COPY)),
            fifos[PATH_COPY].w_data.eq(i_p.x),
            order.w_en.eq(issue),
            order.w_data.eq(Cat(issue_path, i_p.last)),
        ]

        # output: the order FIFO's head names the path to take the next result from
        head_path = order.r_data[0:2]
        head_ready = Mux(head_path == PATH_FMA, fifos[PATH_FMA].r_rdy,
                     Mux(head_path == PATH_DIV, fifos[PATH_DIV].r_rdy, fifos[PATH_COPY].r_rdy))
        head_data = Mux(head_path == PATH_FMA, fifos[PATH_FMA].r_data,
                    Mux(head_path == PATH_DIV, fifos[PATH_DIV].r_data, fifos[PATH_COPY].r_data))
        m.d.comb += [
            self.o.valid.eq(order.r_rdy & head_ready),
            self.o.payload.r.eq(head_data),
            self.o.payload.last.eq(order.r_data[2]),
            delivered.eq(self.o.valid & self.o.ready),
            order.r_en.eq(delivered),
        ]
        for k, f in enumerate(fifos):
            m.d.comb += f.r_en.eq(delivered & (head_path == k))
        return m
