# amaranth: UnusedElaboratable=no
"""P-lane binary32 vector unit: the engine's vector PE."""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import check_dsp, f32_bits
from .divider import Divider
from .fma import FusedMultiplyAdd
from .sqrt import SquareRoot

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
    ADAGRAD = 6   #: row-wise Adagrad on one row (x = g, y = E, s = lr; see VectorUnit)


def vector_in_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "op": VectorOp, "last": 1, "scalar": 32, "eps": 32, "state": 32,
        "x": data.ArrayLayout(32, lanes), "y": data.ArrayLayout(32, lanes)})


def vector_out_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"r": data.ArrayLayout(32, lanes), "state": 32, "last": 1})


class _Scalar:
    """A free-running scalar unit inside the Adagrad sequencer: its operands pass one
    register first (they come from wide multiplexers), then fixed latency; a tag (the
    destination register index) travels alongside."""

    def __init__(self, m, name, unit, tag_width):
        self.unit = unit
        m.submodules[name] = unit
        m.d.comb += unit.o.ready.eq(1)
        self.valid = Signal(name=f"{name}_issue")
        self.payload = Signal(unit.i.payload.shape(), name=f"{name}_operands")
        m.d.sync += unit.i.valid.eq(self.valid)
        m.d.sync += unit.i.payload.eq(self.payload)
        self.tag = Signal(tag_width, name=f"{name}_tag")
        tags = [self.tag]
        for k in range(unit.latency + 1):
            t = Signal(tag_width, name=f"{name}_tag{k}")
            m.d.sync += t.eq(tags[-1])
            tags.append(t)
        self.out_tag = tags[-1]
        self.out_valid = unit.o.valid
        self.out = unit.o.payload


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
    """P lanes of binary32 arithmetic with the operations the engine needs.

    Element-wise operations (:class:`VectorOp` ``COPY`` ... ``SGD``) take one beat of P
    lanes (``x``, ``y`` and a ``scalar``) and give one beat of P results. Every lane has a
    :class:`~.fma.FusedMultiplyAdd` (which also computes add as ``fma(x, 1, y)`` and
    multiply as ``fma(s, x, -0)``, both exactly the correctly rounded sum and product) and
    a :class:`~.divider.Divider`; copies bypass both. The units run free (never stalled):
    each path writes a FIFO of ``fifo_depth`` entries, an order FIFO records which path
    each beat took, and a beat is accepted only when a result slot is reserved for it, so
    results leave in order and backpressure never reaches the pipelines. A run of one
    operation sustains one beat per cycle; switching between paths of different latency
    may insert bubbles.

    ``ADAGRAD`` updates one row of ``length`` = D elements with row-wise Adagrad exactly as
    docs/design.md section 2 specifies. The row arrives as ``ceil(D / P)`` beats (element
    ``d = beat*P + lane``) with ``x`` = the merged gradient g, ``y`` = the row E; the first
    beat carries ``scalar`` = lr, ``eps`` and the row's Adagrad ``state``. The unit
    stores the row, then (with its own scalar FMA, divider and square root)

    * folds eight strided partial sums ``s_i = fma(g[d], g[d], s_i)`` over
      ``d = i (mod 8)``, d ascending, each from +0 (the eight chains interleave in the
      pipelined FMA),
    * combines ``((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))``, divides by D,
      ``state = fl(state + that)``, ``m = fl(lr / fl(sqrt(state) + eps))``,
    * and sends ``ceil(D / P)`` result beats ``r[d] = fma(-m, g[d], E[d])`` (lanes past D
      in the last beat compute the same formula on whatever they held) with the new state
      in every beat's ``state`` field.

    One row takes about ``D/P + ceil(D/8) * max(8, L_fma + 3) + 6 L_fma + 2 L_div +
    L_sqrt + D/P`` cycles (the eight chains are sequential by definition); no other beat
    is accepted meanwhile.

    Parameters
    ----------
    lanes : int
        P, lanes per beat (>= 1).
    length : int
        D, elements per row for ``ADAGRAD`` (>= 1, < 2**24).
    fifo_depth : int, optional
        Result slots (default: the divider latency + 4, enough for one beat per cycle).
    dsp : str
        Multiplier implementation of the FMAs: ``"generic"`` or ``"ecp5"`` (see
        :class:`~.fma.FusedMultiplyAdd`).

    Members
    -------
    i : In(stream.Signature(vector_in_layout(lanes)))
        ``op``, ``last`` (passed through, per beat), ``scalar``, ``eps``, ``state``,
        ``x[P]``, ``y[P]``.
    o : Out(stream.Signature(vector_out_layout(lanes)))
        ``r[P]``, ``state`` (ADAGRAD results: the updated state; else 0), ``last``.

    Reset empties the unit (rows and results in flight are dropped).
    """

    def __init__(self, lanes=4, length=64, fifo_depth=None, dsp="generic"):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"Lane count must be a positive integer, not {lanes!r}")
        if not isinstance(length, int) or not 1 <= length < (1 << 24):
            raise ValueError(f"Row length must be an integer from 1 to 2**24 - 1, not "
                             f"{length!r}")
        self.dsp = check_dsp("VectorUnit", dsp)
        self.lanes = lanes
        self.length = length
        self.beats = -(-length // lanes)
        self._fma_latency = FusedMultiplyAdd(dsp=dsp).latency
        self._div_latency = Divider().latency
        self._sqrt_latency = SquareRoot().latency
        minimum = max(self._fma_latency, self._div_latency) + 4
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
        P, D, Q = self.lanes, self.length, self.fifo_depth
        beats = self.beats
        lane_w = 32 * P

        # ================= result paths: lanes -> FIFOs, order FIFO ====================
        PATH_FMA, PATH_DIV, PATH_COPY = 0, 1, 2
        fifos = []
        for k, name in enumerate(("fma", "div", "copy")):
            f = _Fifo(width=lane_w, depth=Q)
            m.submodules[f"{name}_fifo"] = f
            fifos.append(f)
        order = _Fifo(width=2 + 1 + 32, depth=Q)
        m.submodules.order_fifo = order

        # issue interface (one beat into the lanes), driven by the sequencer below
        issue = Signal()                     # a beat enters this cycle
        issue_path = Signal(2)
        issue_last = Signal()
        issue_state = Signal(32)
        fma_a = Signal(data.ArrayLayout(32, P))
        fma_b = Signal(data.ArrayLayout(32, P))
        fma_c = Signal(data.ArrayLayout(32, P))
        div_a = Signal(data.ArrayLayout(32, P))
        div_b = Signal(32)
        copy_x = Signal(data.ArrayLayout(32, P))

        # credits: beats accepted and not yet delivered
        count = Signal(range(Q + 1))
        can_issue = Signal(init=1)
        delivered = Signal()
        count_next = Signal(range(Q + 1))
        m.d.comb += count_next.eq(count + issue - delivered)
        m.d.sync += [count.eq(count_next), can_issue.eq(count_next < Q)]   # a register

        # one register between the operand muxes and the lanes (free running: nothing
        # downstream ever stalls)
        lane_fma = Signal(name="lane_fma_valid")
        lane_div = Signal(name="lane_div_valid")
        m.d.sync += [lane_fma.eq(issue & (issue_path == PATH_FMA)),
                     lane_div.eq(issue & (issue_path == PATH_DIV))]
        regs_in = {}
        for name, sig in (("fma_a", fma_a), ("fma_b", fma_b), ("fma_c", fma_c),
                          ("div_a", div_a), ("div_b", div_b)):
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
            fifos[PATH_COPY].w_data.eq(copy_x),
            order.w_en.eq(issue),
            order.w_data.eq(Cat(issue_path, issue_last, issue_state)),
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
            self.o.payload.state.eq(order.r_data[3:35]),
            delivered.eq(self.o.valid & self.o.ready),
            order.r_en.eq(delivered),
        ]
        for k, f in enumerate(fifos):
            m.d.comb += f.r_en.eq(delivered & (head_path == k))

        # ================= Adagrad row store and scalar engine ==========================
        # distributed RAM: ECP5 block RAM read data (no output register) arrives > 5 ns
        # after the clock, too late to reach a register through a multiplexer
        g_mem = Memory(shape=lane_w, depth=beats, init=[], attrs={"ram_style": "distributed"})
        e_mem = Memory(shape=lane_w, depth=beats, init=[], attrs={"ram_style": "distributed"})
        m.submodules.g_mem = g_mem
        m.submodules.e_mem = e_mem
        g_wr, e_wr = g_mem.write_port(), e_mem.write_port()
        # row beats are written one cycle after they are accepted (short paths); the
        # reduction reads no earlier than two cycles after the last write is requested
        wr_en, wr_addr = Signal(), Signal(range(beats))
        wr_g, wr_e = Signal(lane_w), Signal(lane_w)
        wr_req, wr_req_addr = Signal(), Signal(range(beats))
        m.d.sync += [wr_en.eq(wr_req), wr_addr.eq(wr_req_addr), wr_g.eq(self.i.payload.x),
                     wr_e.eq(self.i.payload.y)]
        m.d.comb += [g_wr.addr.eq(wr_addr), g_wr.data.eq(wr_g), g_wr.en.eq(wr_en),
                     e_wr.addr.eq(wr_addr), e_wr.data.eq(wr_e), e_wr.en.eq(wr_en)]
        g_red = g_mem.read_port()            # reduction: one element at a time
        g_upd, e_upd = g_mem.read_port(), e_mem.read_port()   # update: whole beats

        regs = {}
        reg_names = (["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "t0", "t1", "t2", "t3",
                      "u0", "u1", "tot", "q", "state", "rt", "den", "mult", "lr", "eps"])
        for name in reg_names:
            regs[name] = Signal(32, name=f"r_{name}")
        index = {name: k for k, name in enumerate(reg_names)}
        tag_w = max(1, (len(reg_names) - 1).bit_length())
        consts = {"one": C(ONE, 32), "dval": C(f32_bits(D), 32)}

        def operand(name):
            return consts[name] if name in consts else regs[name]

        sfma = _Scalar(m, "sfma", FusedMultiplyAdd(dsp=self.dsp), tag_w)
        sdiv = _Scalar(m, "sdiv", Divider(), tag_w)
        ssqrt = _Scalar(m, "ssqrt", SquareRoot(), tag_w)
        scalars = (sfma, sdiv, ssqrt)
        pending = Signal(range(64))
        started = Signal(range(8))
        finished = Signal(range(8))
        m.d.comb += started.eq(sum(s.valid for s in scalars))
        m.d.comb += finished.eq(sum(s.out_valid for s in scalars))
        m.d.sync += pending.eq(pending + started - finished)
        for s in scalars:
            with m.If(s.out_valid):
                with m.Switch(s.out_tag):
                    for name, k in index.items():
                        with m.Case(k):
                            m.d.sync += regs[name].eq(s.out)

        # default: nothing issued to the scalar units
        for s in scalars:
            m.d.comb += s.valid.eq(0)

        # combine / root / divide program: waves of independent operations
        program = [
            [("fma", "t0", "s0", "one", "s1"), ("fma", "t1", "s2", "one", "s3"),
             ("fma", "t2", "s4", "one", "s5"), ("fma", "t3", "s6", "one", "s7")],
            [("fma", "u0", "t0", "one", "t1"), ("fma", "u1", "t2", "one", "t3")],
            [("fma", "tot", "u0", "one", "u1")],
            [("div", "q", "tot", "dval")],
            [("fma", "state", "state", "one", "q")],
            [("sqrt", "rt", "rt_src")],
            [("fma", "den", "rt", "one", "eps")],
            [("div", "mult", "lr", "den")],
        ]
        unit_of = {"fma": sfma, "div": sdiv, "sqrt": ssqrt}

        # ================= sequencer ====================================================
        beat = Signal(range(beats + 1))
        i_p = self.i.payload
        # reduction schedule
        # a chain's next element may issue once its previous result is back: issue cycle,
        # memory read, operand register, FMA latency, write-back
        period = max(8, self._fma_latency + 3)
        rounds = -(-D // 8)
        rnd = Signal(range(rounds + 1))
        slot = Signal(range(period))
        d_word = Signal(range(beats + 1))   # element d = 8*rnd + slot as (word, lane)
        d_lane = Signal(range(P))
        d_count = Signal(range(D + 8))
        red_issue = Signal()                # address presented this cycle
        red_issue_q = Signal()
        red_tag = Signal(3)
        red_lane = Signal(range(P))
        m.d.comb += g_red.addr.eq(d_word)
        m.d.sync += [red_issue_q.eq(red_issue), red_tag.eq(slot[:3]), red_lane.eq(d_lane)]
        g_elem = Signal(32)
        m.d.comb += g_elem.eq(g_red.data.word_select(red_lane, 32))

        upd_addr = Signal(range(beats + 1))
        m.d.comb += [g_upd.addr.eq(upd_addr), e_upd.addr.eq(upd_addr)]
        neg_mult = Cat(regs["mult"][:31], ~regs["mult"][31])

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                op = i_p.op
                elementwise = op != VectorOp.ADAGRAD
                m.d.comb += self.i.ready.eq(can_issue)
                with m.If(self.i.valid & can_issue):
                    with m.If(elementwise):
                        m.d.comb += issue.eq(1)
                    with m.Else():
                        m.d.comb += [wr_req.eq(1), wr_req_addr.eq(0)]
                        m.d.sync += beat.eq(1)
                        m.next = "LOAD" if beats > 1 else "REDUCE_START"
                # Adagrad scalars: captured in every idle cycle (the scalar units are idle
                # then), so the accepted row's first beat leaves its values behind
                m.d.sync += [regs["lr"].eq(i_p.scalar), regs["eps"].eq(i_p.eps),
                             regs["state"].eq(i_p.state)]
                for k in range(8):
                    m.d.sync += regs[f"s{k}"].eq(0)
                # element-wise lane operands
                s = i_p.scalar
                neg_s = Cat(s[:31], ~s[31])
                m.d.comb += [issue_last.eq(i_p.last), issue_state.eq(0),
                             div_b.eq(s), copy_x.eq(i_p.x)]
                with m.Switch(op):
                    with m.Case(VectorOp.COPY):
                        m.d.comb += issue_path.eq(PATH_COPY)
                    with m.Case(VectorOp.DIV):
                        m.d.comb += issue_path.eq(PATH_DIV)
                    with m.Default():
                        m.d.comb += issue_path.eq(PATH_FMA)
                for lane in range(P):
                    x, y = i_p.x[lane], i_p.y[lane]
                    m.d.comb += div_a[lane].eq(x)
                    with m.Switch(op):
                        with m.Case(VectorOp.ADD):
                            m.d.comb += [fma_a[lane].eq(x), fma_b[lane].eq(ONE),
                                         fma_c[lane].eq(y)]
                        with m.Case(VectorOp.MUL):
                            m.d.comb += [fma_a[lane].eq(s), fma_b[lane].eq(x),
                                         fma_c[lane].eq(NEG_ZERO)]
                        with m.Case(VectorOp.SGD):
                            m.d.comb += [fma_a[lane].eq(neg_s), fma_b[lane].eq(x),
                                         fma_c[lane].eq(y)]
                        with m.Default():
                            m.d.comb += [fma_a[lane].eq(s), fma_b[lane].eq(x),
                                         fma_c[lane].eq(y)]

            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += [wr_req.eq(1), wr_req_addr.eq(beat)]
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == beats - 1):
                        m.next = "REDUCE_START"

            with m.State("REDUCE_START"):
                m.d.sync += [rnd.eq(0), slot.eq(0), d_word.eq(0), d_lane.eq(0),
                             d_count.eq(0)]
                m.next = "REDUCE"

            with m.State("REDUCE"):
                # slot 0..7 of a round: present the address of element d = 8*rnd + slot;
                # the FMA receives it the next cycle. A round lasts `period` cycles, so
                # chain i's previous result is back before its next element issues.
                with m.If((slot < 8) & (d_count < D)):
                    m.d.comb += red_issue.eq(1)
                    m.d.sync += d_count.eq(d_count + 1)
                    with m.If(d_lane == P - 1):
                        m.d.sync += [d_lane.eq(0), d_word.eq(d_word + 1)]
                    with m.Else():
                        m.d.sync += d_lane.eq(d_lane + 1)
                with m.If(slot == period - 1):
                    m.d.sync += [slot.eq(0), rnd.eq(rnd + 1)]
                    with m.If(rnd == rounds - 1):
                        m.next = "DRAIN"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)

            with m.State("DRAIN"):
                with m.If(pending == 0):
                    m.next = "W0_0"

            for w, wave in enumerate(program):
                for k, (unit, dst, *srcs) in enumerate(wave):
                    with m.State(f"W{w}_{k}"):
                        u = unit_of[unit]
                        m.d.comb += [u.valid.eq(1), u.tag.eq(index[dst])]
                        if unit == "fma":
                            m.d.comb += [u.payload.a.eq(operand(srcs[0])),
                                         u.payload.b.eq(operand(srcs[1])),
                                         u.payload.c.eq(operand(srcs[2]))]
                        elif unit == "div":
                            m.d.comb += [u.payload.a.eq(operand(srcs[0])),
                                         u.payload.b.eq(operand(srcs[1]))]
                        else:
                            m.d.comb += u.payload.a.eq(regs["state"])
                        m.next = f"W{w}_{k + 1}" if k + 1 < len(wave) else f"W{w}_wait"
                with m.State(f"W{w}_wait"):
                    # `pending` counts this wave's last issue one cycle late
                    with m.If((pending == 0) & ~started):
                        m.next = f"W{w + 1}_0" if w + 1 < len(program) else "UPDATE_START"

            with m.State("UPDATE_START"):
                m.d.sync += beat.eq(0)
                m.next = "UPDATE"

            with m.State("UPDATE"):
                # upd_addr runs one beat ahead of `beat` whenever a beat issues
                go = can_issue
                m.d.comb += [issue.eq(go), issue_path.eq(PATH_FMA),
                             issue_last.eq(beat == beats - 1), issue_state.eq(regs["state"]),
                             upd_addr.eq(beat + go)]
                for lane in range(P):
                    m.d.comb += [fma_a[lane].eq(neg_mult),
                                 fma_b[lane].eq(g_upd.data.word_select(lane, 32)),
                                 fma_c[lane].eq(e_upd.data.word_select(lane, 32))]
                with m.If(go):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == beats - 1):
                        m.next = "IDLE"

        # the reduction's FMA issue (one cycle after the address)
        with m.If(red_issue_q):
            m.d.comb += [sfma.valid.eq(1), sfma.tag.eq(red_tag),
                         sfma.payload.a.eq(g_elem), sfma.payload.b.eq(g_elem)]
            with m.Switch(red_tag):
                for k in range(8):
                    with m.Case(k):
                        m.d.comb += sfma.payload.c.eq(regs[f"s{k}"])
        return m
