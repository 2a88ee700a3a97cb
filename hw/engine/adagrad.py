"""Row-wise Adagrad update of the backward job: rows pipelined through three stages.

For each distinct row the engine sends its merged gradient ``g`` (``D/16`` beats), the row
``E`` (``D/16`` beats, in step with ``g``) and the memory beat that holds the row's Adagrad
state (16 states to a beat; ``lane`` picks the row's).  Out come the ``D/16`` updated row
beats, then the state beat with the row's lane replaced by the new state (the other 15
states as they were read, or, with ``chained``, as the row before left them: its state beat
is the same, and was read before that row's was written), row after row in the order they
came.  The arithmetic is exactly docs/design.md section 2:

A. squares, on the unit's ``P`` FMA lanes: eight strided partial sums per row,
   ``s_i = fma(g[d], g[d], s_i)`` over ``d = i (mod 8)``, d ascending, each from +0.  A
   chain is sequential by definition, so the rows waiting are taken in groups of up to
   ``group`` and their chains interleaved: each step ``d = 8j .. 8j+7`` issues every row's
   eight chains (``8 / min(P, 8)`` issues a row), and a step lasts at least the FMA's
   round trip (:data:`ROUND_TRIP` + its latency) so that a chain's previous sum is back;
B. scalars, a free-running pipeline of its own units, a row a cycle:
   ``((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))``, ``/ D``, ``state = fl(state + that)``,
   ``m = fl(lr / fl(sqrt(state) + eps))``;
C. the update, on the same ``P`` lanes (it has priority over A):
   ``E[d] = fma(-m, g[d], E[d])``, ``D/P`` issues a row.

Rows wait in a ring of ``ring`` slots (their ``g``, ``E`` and state beat) from their arrival
until their state beat leaves.  Throughput: the lanes' work, ``2 D / P`` cycles a row
(``D / 8 + D / P`` at P = 16, the squares being eight chains wide)
(A's steps are padded to the round trip when fewer than about ``(L_fma + 4) P / 8`` rows
are waiting, i.e. when the rows come slower than the lanes could take them); latency about
``D/8 (L_fma + 4) + 3 L_add + 2 L_div + L_sqrt + L_add + D/P`` cycles a row.  Reset empties
the unit.  ``lr`` and ``eps`` must hold while ``busy``.
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.adder import Adder
from ..fp.common import f32_bits
from ..fp.divider import Divider
from ..fp.fma import FusedMultiplyAdd
from ..fp.sqrt import SquareRoot
from .params import counter_signal

__all__ = ["AdagradUnit"]

BEAT_BITS = 512
LANES = 16          # binary32 words in a memory beat
CHAINS = 8          # the strided partial sums of docs/design.md
# From a lane request to the cycle its result may be read back: the read of the operands,
# the lanes' input register and the write of the result (three cycles), and one of margin.
ROUND_TRIP = 4


def _delay(m, value, cycles, name):
    """``value`` as it was ``cycles`` clock cycles ago."""
    for k in range(cycles):
        nxt = Signal.like(value, name=f"{name}_d{k + 1}")
        m.d.sync += nxt.eq(value)
        value = nxt
    return value


def _unit(m, name, unit, valid, **operands):
    """A free-running pipelined unit behind one operand register; returns (valid, result)."""
    m.submodules[name] = unit
    m.d.comb += unit.o.ready.eq(1)
    m.d.sync += unit.i.valid.eq(valid)
    for field, v in operands.items():
        m.d.sync += getattr(unit.i.payload, field).eq(v)
    return unit.o.valid, unit.o.payload


class AdagradUnit(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    dim : int       D, a positive multiple of 16
    lanes : int     P, FMA lanes shared by the squares and the update (a divisor of 16)
    ring : int      rows held (a power of two, at least 4)
    group : int     most rows whose squares interleave (1 .. ring)

    Members
    -------
    lr, eps : In(32)
    g, e : In(stream.Signature(512))          ``D/16`` beats per row each, taken together
    state : In(stream.Signature({beat, lane, chained}))  one per row
    out : Out(stream.Signature({data, state, last}))
        ``D/16`` row beats, then the state beat (``state`` and ``last`` set).
    busy : Out(1)   a row is inside
    """

    def __init__(self, dim, lanes=4, ring=32, group=16):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < LANES or dim % LANES:
            raise ValueError(f"AdagradUnit dim must be a positive multiple of {LANES}, not {dim!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1 or LANES % lanes:
            raise ValueError(f"AdagradUnit lanes must divide {LANES}, not {lanes!r}")
        # (at least 4: a SyncFIFOBuffered of depth 2 refuses a write the cycle after its first,
        # and the row FIFOs below, as deep as the ring, are written without asking)
        if isinstance(ring, bool) or not isinstance(ring, int) or ring < 4 or ring & (ring - 1):
            raise ValueError(f"AdagradUnit ring must be a power of two of at least 4, not {ring!r}")
        if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= ring:
            raise ValueError(f"AdagradUnit group must be an integer in [1, ring], not {group!r}")
        self.dim, self.lanes, self.ring, self.group = dim, lanes, ring, group
        self.beats = dim // LANES
        self.chain_lanes = min(lanes, CHAINS)   # chains a square issue takes
        self.StateIn = data.StructLayout({"beat": BEAT_BITS, "lane": 4, "chained": 1})
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
        self._m = m
        self._ring_and_load()
        self._lanes()
        self._squares()
        self._scalars()
        self._update()
        self._output()
        return m

    # ---- the ring: rows as they come (g, E beats; the state beat and its lane's state) -----
    def _ring_and_load(self):
        m, beats, R = self._m, self.beats, self.ring
        cbits = R.bit_length()                  # counters modulo 2R
        self.loaded, self.squared, self.updated, self.freed = (
            Signal(cbits, name=n) for n in ("loaded", "squared", "updated", "freed"))
        self.slot_bits = cbits - 1
        for name in ("g", "e"):
            mem = memory.Memory(shape=BEAT_BITS, depth=R * beats, init=[])
            m.submodules[f"{name}_ring"] = mem
            setattr(self, f"{name}_mem", mem)
        gw, ew = self.g_mem.write_port(), self.e_mem.write_port()
        # the state beats wait for their rows' outputs; the states for the scalar stage
        m.submodules.old = self.old = fifo.SyncFIFOBuffered(width=self.StateIn.size, depth=R)
        m.submodules.old_state = self.old_state = fifo.SyncFIFOBuffered(width=32, depth=R)
        jb = counter_signal(beats)
        full = (self.loaded - self.freed)[:cbits] == R
        take = self.g.valid & self.e.valid & self.state.valid & ~full
        addr = self.loaded[:self.slot_bits] * beats + jb
        st = self.state.payload
        m.d.comb += [gw.addr.eq(addr), gw.data.eq(self.g.payload), gw.en.eq(take),
                     ew.addr.eq(addr), ew.data.eq(self.e.payload), ew.en.eq(take),
                     self.g.ready.eq(take), self.e.ready.eq(take),
                     self.old.w_data.eq(st), self.old_state.w_data.eq(st.beat.word_select(st.lane, 32))]
        with m.If(take):
            m.d.sync += jb.eq(Mux(jb == beats - 1, 0, jb + 1))
            with m.If(jb == beats - 1):
                m.d.sync += self.loaded.eq(self.loaded + 1)
                m.d.comb += [self.state.ready.eq(1), self.old.w_en.eq(1), self.old_state.w_en.eq(1)]
        self.loading = jb != 0

    # ---- the P FMA lanes, requested by A (squares) and C (update) --------------------------
    def _lanes(self):
        """A request names its operands in one cycle (memory addresses); the next cycle
        forms them (``self.operands``), the lanes' input register takes them, and the
        result comes ``L_fma`` cycles later with the request's tag."""
        m, P = self._m, self.lanes
        self.Tag = data.StructLayout({"update": 1, "row": range(self.group), "block": range(CHAINS),
                                      "first": 1, "last": 1, "word": range(LANES // self.chain_lanes)})
        self.req, self.req_tag = Signal(name="lane_req"), Signal(self.Tag, name="lane_req_tag")
        self.update_wants = Signal()            # C takes the lanes this cycle
        self.operands = [Signal(data.StructLayout({"a": 32, "b": 32, "c": 32}), name=f"operands{k}")
                         for k in range(P)]
        formed = _delay(m, self.req, 1, "lane_req")
        self.formed_tag = _delay(m, self.req_tag, 1, "formed_tag")
        tag_in = _delay(m, self.formed_tag, 1, "lane_tag")     # beside the lanes' input register
        self.result_valid = Signal()
        self.results = []
        for k in range(P):
            fu = FusedMultiplyAdd()
            valid, r = _unit(m, f"fma{k}", fu, formed, a=self.operands[k].a, b=self.operands[k].b,
                             c=self.operands[k].c)
            self.results.append(r)
            if k == 0:
                m.d.comb += self.result_valid.eq(valid)
                self.fma_latency = fu.latency
        self.result_tag = _delay(m, tag_in, self.fma_latency, "result_tag")
        self.formed = formed

    # ---- A: the eight strided sums of squares of a group of rows ---------------------------
    def _squares(self):
        m, P, K, D = self._m, self.lanes, self.group, self.dim
        Cw = self.chain_lanes
        CB = CHAINS // Cw                       # issues a row a step
        steps = D // CHAINS
        min_period = ROUND_TRIP + self.fma_latency
        g_rd = self.g_mem.read_port()
        m.submodules.sums_acc = acc = memory.Memory(shape=32 * Cw, depth=K * CB, init=[])
        acc_wr, acc_rd = acc.write_port(), acc.read_port()
        m.submodules.sums = self.sums = fifo.SyncFIFOBuffered(width=32 * CHAINS, depth=self.ring)

        busy, base = Signal(name="sq_busy"), Signal.like(self.squared, name="sq_base")
        k = Signal(range(K + 1), name="sq_rows")
        period = Signal(range(max(K * CB, min_period) + 1), name="sq_period")
        j, x = Signal(range(steps), name="sq_step"), Signal(range(max(K * CB, min_period)), name="sq_slot")
        waiting = (self.loaded - self.squared)[:len(self.loaded)]
        with m.If(~busy & (waiting != 0)):
            n = Mux(waiting > K, K, waiting)
            m.d.sync += [busy.eq(1), base.eq(self.squared), k.eq(n), j.eq(0), x.eq(0),
                         period.eq(Mux(n * CB > min_period, n * CB, min_period))]
        real = busy & (x < k * CB)
        row, block = x // CB, x % CB
        grant = real & ~self.update_wants
        with m.If(busy & (~real | grant)):      # padding slots pass even while C has the lanes
            m.d.sync += x.eq(Mux(x == period - 1, 0, x + 1))
            with m.If(x == period - 1):
                m.d.sync += j.eq(j + 1)
                with m.If(j == steps - 1):
                    m.d.sync += [busy.eq(0), self.squared.eq(self.squared + k)]
        word = (j % 2) * CB + block             # the Cw-word group of d = 8j + Cw*block
        with m.If(grant):
            m.d.comb += [self.req.eq(1), self.req_tag.update.eq(0), self.req_tag.row.eq(row),
                         self.req_tag.block.eq(block), self.req_tag.first.eq(j == 0),
                         self.req_tag.last.eq(j == steps - 1), self.req_tag.word.eq(word)]
        m.d.comb += [g_rd.addr.eq((base + row)[:self.slot_bits] * self.beats + j // 2),
                     acc_rd.addr.eq(row * CB + block)]
        # operands (the cycle after the request): g[d]^2 + s, s = +0 at the first step
        t = self.formed_tag
        with m.If(self.formed & ~t.update):
            for lane in range(Cw):
                gd = g_rd.data.word_select(t.word * Cw + lane, 32)
                m.d.comb += [self.operands[lane].a.eq(gd), self.operands[lane].b.eq(gd),
                             self.operands[lane].c.eq(Mux(t.first, 0, acc_rd.data.word_select(lane, 32)))]
        # results: back into the sums, or (the last step) gathered, a row's eight, for B
        rt = self.result_tag
        res = Cat(*self.results[:Cw])
        gathered = Signal(32 * CHAINS)
        mine = self.result_valid & ~rt.update
        m.d.comb += [acc_wr.addr.eq(rt.row * CB + rt.block), acc_wr.data.eq(res),
                     acc_wr.en.eq(mine & ~rt.last)]
        full_row = Signal(32 * CHAINS)
        m.d.comb += [full_row.eq(gathered), full_row.word_select(rt.block, 32 * Cw).eq(res)]
        with m.If(mine & rt.last):
            m.d.sync += gathered.eq(full_row)
            with m.If(rt.block == CB - 1):
                m.d.comb += [self.sums.w_en.eq(1), self.sums.w_data.eq(full_row)]
        self.squaring = busy

    # ---- B: the row's scalars, a free-running pipeline --------------------------------------
    def _scalars(self):
        m, R = self._m, self.ring
        s = data.View(data.ArrayLayout(32, CHAINS), self.sums.r_data)
        go = self.sums.r_rdy
        m.d.comb += self.sums.r_en.eq(go)
        level, values = go, [s[i] for i in range(CHAINS)]
        for depth in range(3):                  # ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))
            outs = []
            for i in range(len(values) // 2):
                level_v, r = _unit(m, f"tree{depth}_{i}", Adder(), level, a=values[2 * i], b=values[2 * i + 1])
                outs.append(r)
            level, values = level_v, outs
        q_v, q = _unit(m, "div_dim", Divider(), level, a=values[0], b=C(f32_bits(self.dim), 32))
        m.d.comb += self.old_state.r_en.eq(q_v)     # (rows keep their order throughout)
        st_v, st = _unit(m, "add_state", Adder(), q_v, a=self.old_state.r_data, b=q)
        m.submodules.new_state = self.new_state = fifo.SyncFIFOBuffered(width=32, depth=R)
        m.d.comb += [self.new_state.w_en.eq(st_v), self.new_state.w_data.eq(st)]
        rt_v, rt = _unit(m, "sqrt", SquareRoot(), st_v, a=st)
        den_v, den = _unit(m, "add_eps", Adder(), rt_v, a=rt, b=self.eps)
        m_v, mult = _unit(m, "div_lr", Divider(), den_v, a=self.lr, b=den)
        m.submodules.multipliers = self.mults = fifo.SyncFIFOBuffered(width=32, depth=R)
        m.d.comb += [self.mults.w_en.eq(m_v), self.mults.w_data.eq(mult)]

    # ---- C: E = fma(-m, g, E), D/P lane beats a row, as long as the output has room --------
    def _update(self):
        m, P, beats = self._m, self.lanes, self.beats
        S = LANES // P                          # lane beats per memory beat
        n = beats * S
        # (lane beats in flight: the request, operand and input stages and the FMA, plus the
        # output's gathering into memory beats, so that C keeps issuing while beats leave)
        Q = self.fma_latency + 2 * ROUND_TRIP + 8
        m.submodules.results = self.res = fifo.SyncFIFOBuffered(width=32 * P, depth=Q)
        owed = Signal(range(Q + 1))             # lane beats requested and not yet taken out
        v = Signal(range(n))
        want = self.update_wants
        m.d.comb += want.eq(self.mults.r_rdy & (owed < Q))
        g_rd, e_rd = self.g_mem.read_port(), self.e_mem.read_port()
        addr = self.updated[:self.slot_bits] * beats + v // S
        m.d.comb += [g_rd.addr.eq(addr), e_rd.addr.eq(addr)]
        neg_m = Cat(self.mults.r_data[:31], ~self.mults.r_data[31])
        neg_m_q = Signal(32)
        m.d.sync += neg_m_q.eq(neg_m)
        with m.If(want):
            m.d.comb += [self.req.eq(1), self.req_tag.update.eq(1), self.req_tag.word.eq(v % S)]
            m.d.sync += v.eq(Mux(v == n - 1, 0, v + 1))
            with m.If(v == n - 1):
                m.d.comb += self.mults.r_en.eq(1)
                m.d.sync += self.updated.eq(self.updated + 1)
        t = self.formed_tag
        with m.If(self.formed & t.update):
            for lane in range(P):
                m.d.comb += [self.operands[lane].a.eq(neg_m_q),
                             self.operands[lane].b.eq(g_rd.data.word_select(t.word * P + lane, 32)),
                             self.operands[lane].c.eq(e_rd.data.word_select(t.word * P + lane, 32))]
        m.d.comb += [self.res.w_en.eq(self.result_valid & self.result_tag.update),
                     self.res.w_data.eq(Cat(*self.results))]
        m.d.sync += owed.eq(owed + want - (self.res.r_rdy & self.res.r_en))

    # ---- out: lane beats gathered into memory beats, then the row's state beat --------------
    def _output(self):
        m, P, beats = self._m, self.lanes, self.beats
        S, W = LANES // P, 32 * P
        k, jb = counter_signal(S), counter_signal(beats)
        acc = Signal(BEAT_BITS)
        obuf, obuf_valid, state_pending = Signal(self.Out), Signal(), Signal()
        free = ~obuf_valid | self.out.ready
        accept = self.res.r_rdy & ~state_pending & ((k != S - 1) | free)
        full = Signal(BEAT_BITS)
        m.d.comb += [full.eq(acc), full.word_select(k, W).eq(self.res.r_data),
                     self.res.r_en.eq(accept),
                     self.out.valid.eq(obuf_valid), self.out.payload.eq(obuf)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += obuf_valid.eq(0)
        old = data.View(self.StateIn, self.old.r_data)
        last_state = Signal(BEAT_BITS)          # the state beat of the row before
        with m.If(accept):
            m.d.sync += [acc.eq(full), k.eq(Mux(k == S - 1, 0, k + 1))]
            with m.If(k == S - 1):
                m.d.sync += [obuf_valid.eq(1), obuf.data.eq(full), obuf.state.eq(0), obuf.last.eq(0),
                             jb.eq(Mux(jb == beats - 1, 0, jb + 1))]
                with m.If(jb == beats - 1):
                    m.d.sync += state_pending.eq(1)
        with m.Elif(state_pending & free):
            beat = Signal(BEAT_BITS)
            m.d.comb += [beat.eq(Mux(old.chained, last_state, old.beat)),
                         beat.word_select(old.lane, 32).eq(self.new_state.r_data),
                         self.old.r_en.eq(1), self.new_state.r_en.eq(1)]
            m.d.sync += [obuf_valid.eq(1), obuf.data.eq(beat), obuf.state.eq(1), obuf.last.eq(1),
                         state_pending.eq(0), self.freed.eq(self.freed + 1), last_state.eq(beat)]
        m.d.comb += self.busy.eq((self.loaded != self.freed) | self.loading | obuf_valid)
