"""Fold datapath: the vector PE and the aggregation buffer that execute the sharing
scheduler's operations (:mod:`.scheduler`), one 512-bit beat (16 binary32 lanes) per cycle.

An operation ``{dst, src, src_zero, item, item_first, c, kind}`` means, lane by lane over
the D/16 beats of a row,

* kind 0: ``PS[dst] = fma(c, ROW, src_zero ? +0 : PS[src])`` (one rounding);
* kind 1: ``PS[dst] = fl(fl(c * ROW) + (src_zero ? +0 : PS[src]))`` (two roundings: the
  ``dedup`` merge of a mean-pooled gradient, DESIGN.md section 2).

``ROW`` is the current item's row.  An operation with ``item_first`` takes the next item's
D/16 beats from ``rows`` as it executes (beat ``j`` of the row feeds beat ``j`` of the
operation and is kept in the row buffer); the item's later operations read the row buffer.
A final ``{member, node, zero}`` sends the D/16 beats of ``PS[node]`` (``+0`` beats when
``zero``) to ``results``.

Pipeline (one beat in flight per stage)::

    issue  --  PS / row / scratch read addresses, hazard check, rows beat taken
    R      --  read data; operands into the 16 FMAs, or a final's beat on ``results``
    FMA x L -- (L = FusedMultiplyAdd.latency, 13 by default as written; never stalled); in the
               cycle the results leave the FMAs they are written to PS (or the scratch row)

Kind 1 runs as two passes of the same FMAs, both exact: ``fl(c*x) = fma(c, x, -0)`` (a zero
product keeps its sign, since ``±0 + -0 = ±0``; any other product is rounded once, with
its own sign if it underflows to zero) into a one-row scratch buffer, then
``fl(p + acc) = fma(1, p, acc)``.  Kinds 2 and 3 are reserved: they execute as kind 0 and
set the sticky ``error`` bit.
"""
from amaranth.hdl import C, Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.common import check_pipeline
from ..fp.fma import FusedMultiplyAdd

__all__ = ["FoldDatapath", "LANES", "BEAT_BITS"]

LANES = 16                  # binary32 lanes of one 512-bit memory beat
BEAT_BITS = 32 * LANES
_ONE = 0x3F800000
_NEG_ZERO = 0x80000000


def _positive_int(v):
    return not isinstance(v, bool) and isinstance(v, int) and v >= 1


class FoldDatapath(wiring.Component):
    """Vector PE (16 binary32 FMA lanes) and aggregation buffer (the partial sums).

    Parameters
    ----------
    dim : int
        Vector length D, a positive multiple of 16; a row is ``D/16`` beats.
    num_classes : int
        Partial-sum entries (``ShareScheduler.num_classes``).
    node_bits : int
        Width of ``dst``, ``src``, ``node`` and ``member`` (``ShareScheduler.node_bits``);
        ``2**node_bits >= num_classes``.
    item_bits : int
        Width of the ``item`` field of an operation (passed through, not used).
    kind_bits : int
        Width of the ``kind`` field (default 2).
    fma_pipeline : iterable of str, optional
        Register points of the FMAs (see :class:`~refree.hw.fp.fma.FusedMultiplyAdd`);
        default all (L = 13 when this was written).

    Attributes
    ----------
    beats : int
        Beats per row, ``dim // 16``.
    fma_latency : int
        ``L``, cycles through one FMA.
    latency : int
        ``L + 1``: cycles from an operation beat's issue (the cycle it is taken) to the cycle
        its result is written; a beat that reads the same partial-sum beat can issue in that
        write cycle (the read is transparent), no earlier.
    Op, Final, Result : data.StructLayout
        Payload layouts; ``Op`` and ``Final`` are identical to the scheduler's.

    Members
    -------
    start : In(1)
        Pulse: a new part.  Pulse it only after the previous part's last final has been
        accepted (``ShareScheduler`` is idle then); it reopens ``ops`` (see below) and clears
        ``error``.
    ops : In(stream.Signature(Op))
        Operations.  Unknown ``src`` contents (a class never written) give undefined data.
    rows : In(stream.Signature(512))
        The beats of the items' rows in item order, ``D/16`` per item, lane ``k`` in bits
        ``32k .. 32k+31``; one item per operation with ``item_first``.
    finals : In(stream.Signature(Final))
        Results to send.  ``ops`` has priority; once a final has been accepted, ``ops`` is
        closed until ``start``, so a part's finals cannot be overtaken by the next part's
        operations.  A producer must therefore present a part's first final only after its
        last operation (``ShareScheduler`` does: it sends finals after its last operation
        was accepted).
    results : Out(stream.Signature(Result))
        ``{member, beat, data, last}``: the ``D/16`` beats of each final, ``last`` on the
        final beat.
    busy : Out(1)
        Work in flight: an operation or final partly issued, a beat in R (an operation
        beat, or a result beat not yet taken) or in the FMAs.  Low with no operation or final
        presented means every result has been delivered and every write done.
    error : Out(1)
        Sticky: an operation with a reserved kind (2 and up, when ``kind_bits > 1``) was
        executed (as kind 0).

    Notes
    -----
    Storage: the partial sums are one memory of ``num_classes * D/16`` words of 512 bits
    (class ``q`` beat ``j`` at word ``q * D/16 + j``) with one synchronous read port,
    transparent to its one write port; the row buffer and the scratch row (kind 1) are
    ``D/16`` words each.

    Throughput: one beat per cycle (a kind-0 operation every ``D/16`` cycles, a final every
    ``D/16`` cycles) while ``rows``, ``ops``/``finals`` and ``results`` keep up and there is
    no hazard; a kind-1 operation takes ``2 * D/16`` beats plus ``max(0, L + 1 - D/16)``
    cycles (its sum pass waits for its product pass).  Measured at D = 16 (with any L):
    48 independent operations are taken in 48 consecutive cycles, and from the first
    operation to the last result beat of 16 finals takes ``48 + 16 + L + 1`` cycles (the
    fill is the first final waiting for the last operation's write).  An operation directly
    after a result beat (the next part) loses one cycle.

    Hazards (read after write): a beat that reads ``PS[q]`` beat ``j`` (an operation's
    ``src``, a final's ``node``) waits while an issued beat that writes ``PS[q]`` beat ``j``
    is still in R or in the FMAs: a comparison with the ``L`` write tags of the pipeline,
    per beat, so only true conflicts wait.  An operation that reads the partial sum
    written by the operation just before it therefore waits ``max(0, L + 1 - D/16)``
    cycles at its first beat: with L = 13, 13 cycles at D = 16, 12 at D = 32, none from
    D = 224 on.
    The sum pass of a kind-1 operation waits for the scratch row the same way.  There
    are no write-after-read hazards: reads happen at issue, in issue order, and a beat
    writes ``L + 1`` cycles after its own issue, so every write comes after the reads of all
    earlier beats (this covers a recycled class written just after its last reader, a
    final followed by the next part's operations, and the row and scratch buffers).
    Writes happen in issue order (fixed latency): no write-after-write hazards either.

    Latency: a result beat appears on ``results`` the cycle after it issues, so at the
    earliest ``L + 2`` cycles after the operation beat that wrote its partial sum issued
    (measured: exactly that, 15 cycles at L = 13).

    Backpressure: the FMAs' outputs are always taken (they never stall); only ``results``
    can stall, which holds a result beat (and the issue stage) in R; operations already in
    the FMAs complete.  ``finals.ready`` depends combinationally on ``results.ready``;
    ``ops.ready`` and ``rows.ready`` depend on the valid and payload of ``ops``, ``rows``
    and ``finals`` only.

    Reset: the pipeline and the issue state empty (``error`` low, ``ops`` open).  The
    partial sums, the row buffer and the scratch row keep undefined contents: every class
    is written before a correct program reads it.
    """

    def __init__(self, dim, num_classes, node_bits, item_bits, kind_bits=2, *,
                 fma_pipeline=None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or dim % LANES:
            raise ValueError(f"FoldDatapath dim must be a positive multiple of {LANES}, "
                             f"not {dim!r}")
        for name, v in (("num_classes", num_classes), ("node_bits", node_bits),
                        ("item_bits", item_bits), ("kind_bits", kind_bits)):
            if not _positive_int(v):
                raise ValueError(f"FoldDatapath {name} must be a positive integer, not {v!r}")
        if num_classes > 1 << node_bits:
            raise ValueError(f"FoldDatapath node_bits must number num_classes={num_classes} "
                             f"classes (at least {(num_classes - 1).bit_length()}), "
                             f"not {node_bits!r}")
        self.dim = dim
        self.beats = dim // LANES
        self.num_classes = num_classes
        self._fma_pipeline = fma_pipeline
        self.fma_latency = len(check_pipeline("FusedMultiplyAdd", FusedMultiplyAdd.STAGES,
                                              FusedMultiplyAdd.DEFAULT_PIPELINE, fma_pipeline))
        self.latency = self.fma_latency + 1
        nb = node_bits
        self.Op = data.StructLayout({"dst": nb, "src": nb, "src_zero": 1, "item": item_bits,
                                     "item_first": 1, "c": 32, "kind": kind_bits})
        self.Final = data.StructLayout({"member": nb, "node": nb, "zero": 1})
        beat_bits = max(1, (self.beats - 1).bit_length())
        self.Result = data.StructLayout({"member": nb, "beat": beat_bits, "data": BEAT_BITS,
                                         "last": 1})
        super().__init__({
            "start": In(1),
            "ops": In(stream.Signature(self.Op)),
            "rows": In(stream.Signature(BEAT_BITS)),
            "finals": In(stream.Signature(self.Final)),
            "results": Out(stream.Signature(self.Result)),
            "busy": Out(1),
            "error": Out(1),
        })

    @classmethod
    def for_scheduler(cls, scheduler, dim, **kwargs):
        """A datapath sized for ``scheduler`` (a :class:`.scheduler.ShareScheduler`)."""
        return cls(dim, scheduler.num_classes, scheduler.node_bits,
                   Shape.cast(scheduler.Op["item"].shape).width,
                   Shape.cast(scheduler.Op["kind"].shape).width,
                   **kwargs)

    def elaborate(self, platform):
        m = Module()
        B, L = self.beats, self.fma_latency
        depth = self.num_classes * B
        beat_bits = max(1, (B - 1).bit_length())

        # ---- storage ----------------------------------------------------------------
        m.submodules.ps = ps = memory.Memory(shape=BEAT_BITS, depth=depth, init=[])
        ps_wr = ps.write_port()
        ps_rd = ps.read_port(transparent_for=(ps_wr,))
        m.submodules.row = row = memory.Memory(shape=BEAT_BITS, depth=B, init=[])
        row_wr = row.write_port()
        row_rd = row.read_port(transparent_for=(row_wr,))     # a row beat read as it arrives
        m.submodules.scratch = scratch = memory.Memory(shape=BEAT_BITS, depth=B, init=[])
        scr_wr = scratch.write_port()
        scr_rd = scratch.read_port(transparent_for=(scr_wr,))
        addr_shape = len(ps_wr.addr)

        # ---- issue state ------------------------------------------------------------
        j = Signal(beat_bits)                   # beat of the operation or final at the head
        second = Signal()                       # the second pass of a kind-1 operation
        closed = Signal()                       # a final was taken: ops wait for start
        error = Signal()
        m.d.comb += self.error.eq(error)
        last_beat = j == B - 1

        # ---- stage R (registered at issue) ------------------------------------------
        r_valid, r_final = Signal(), Signal()
        r_pass1, r_pass2 = Signal(), Signal()   # kind 1: product pass, sum pass
        r_c = Signal(32)
        r_src_zero, r_zero, r_last = Signal(), Signal(), Signal()
        r_member = Signal.like(self.results.payload.member)
        r_beat = Signal(beat_bits)
        r_addr = Signal(addr_shape)             # write address (PS, or scratch beat)

        # Pending writes: tag 0 is R, tag k the beat in FMA stage k; tag L writes now.
        p_valid = [Signal(name=f"pend{k}_valid") for k in range(L + 1)]
        p_scr = [Signal(name=f"pend{k}_scratch") for k in range(L + 1)]
        p_addr = [Signal(addr_shape, name=f"pend{k}_addr") for k in range(L + 1)]
        m.d.comb += [p_valid[0].eq(r_valid & ~r_final), p_scr[0].eq(r_pass1),
                     p_addr[0].eq(r_addr)]
        for k in range(1, L + 1):
            m.d.sync += [p_valid[k].eq(p_valid[k - 1]), p_scr[k].eq(p_scr[k - 1]),
                         p_addr[k].eq(p_addr[k - 1])]

        def pending_write(addr, to_scratch):
            """A beat still on its way to ``addr`` (its write is not in this cycle)."""
            hits = [p_valid[k] & (p_scr[k] == to_scratch) & (p_addr[k] == addr) for k in range(L)]
            return Cat(*hits).any() if hits else C(0, 1)

        # ---- issue ------------------------------------------------------------------
        r_result = r_valid & r_final
        hold = r_result & ~self.results.ready                # a result beat waits in R
        op, fin = self.ops.payload, self.finals.payload
        op_mode = ~closed & self.ops.valid
        fin_mode = ~op_mode & self.finals.valid
        kind1 = op.kind == 1
        reserved = op.kind >= 2
        pass1 = kind1 & ~second
        takes_row = op.item_first & ~second     # kind 0, or the product pass of kind 1
        reads_ps = ~op.src_zero & (~kind1 | second)
        src_addr = Signal(addr_shape)
        node_addr = Signal(addr_shape)
        m.d.comb += [src_addr.eq(op.src * B + j), node_addr.eq(fin.node * B + j)]
        op_hazard = (reads_ps & pending_write(src_addr, 0)) | \
                    (kind1 & second & pending_write(j, 1))
        fin_hazard = ~fin.zero & pending_write(node_addr, 0)
        # (an operation never follows a result beat directly, so that ``ops.ready`` and
        # ``rows.ready`` do not depend on ``results.ready``; it costs one cycle per part)
        fire_op = op_mode & ~r_result & ~op_hazard & (~takes_row | self.rows.valid)
        fire_fin = fin_mode & ~hold & ~fin_hazard
        op_done = fire_op & last_beat & (~kind1 | second)

        m.d.comb += [
            ps_rd.addr.eq(Mux(op_mode, src_addr, node_addr)),
            # Reads only for a beat that issues: a waiting result beat keeps its data, and
            # idle cycles leave the lanes' operands (and their switching) alone.
            ps_rd.en.eq(fire_op | fire_fin),
            row_rd.addr.eq(j), row_rd.en.eq(fire_op),
            scr_rd.addr.eq(j), scr_rd.en.eq(fire_op),
            row_wr.addr.eq(j), row_wr.data.eq(self.rows.payload),
            row_wr.en.eq(fire_op & takes_row),
            self.rows.ready.eq(fire_op & takes_row),
            self.ops.ready.eq(op_done),
            self.finals.ready.eq(fire_fin & last_beat),
        ]
        with m.If(fire_op | fire_fin):
            m.d.sync += j.eq(Mux(last_beat, 0, j + 1))
        with m.If(fire_op & last_beat & kind1):
            m.d.sync += second.eq(~second)
        with m.If(fire_op & reserved):
            m.d.sync += error.eq(1)
        with m.If(fire_fin):
            m.d.sync += closed.eq(1)
        with m.If(self.start):
            m.d.sync += [closed.eq(0), error.eq(0)]

        with m.If(~hold):
            m.d.sync += r_valid.eq(fire_op | fire_fin)
        with m.If(fire_op | fire_fin):
            m.d.sync += [r_final.eq(fire_fin),
                         r_pass1.eq(fire_op & pass1), r_pass2.eq(fire_op & kind1 & second),
                         r_c.eq(op.c), r_src_zero.eq(op.src_zero), r_zero.eq(fin.zero),
                         r_member.eq(fin.member), r_beat.eq(j), r_last.eq(last_beat),
                         r_addr.eq(Mux(pass1, j, op.dst * B + j))]

        # ---- R: results ---------------------------------------------------------------
        res = self.results.payload
        m.d.comb += [self.results.valid.eq(r_valid & r_final),
                     res.member.eq(r_member), res.beat.eq(r_beat), res.last.eq(r_last),
                     res.data.eq(Mux(r_zero, 0, ps_rd.data))]

        # ---- R: the 16 lanes ----------------------------------------------------------
        outs = []
        for k in range(LANES):
            m.submodules[f"fma{k}"] = u = FusedMultiplyAdd(self._fma_pipeline)
            lane = slice(32 * k, 32 * k + 32)
            acc = Mux(r_src_zero, 0, ps_rd.data[lane])
            m.d.comb += [
                u.i.valid.eq(p_valid[0]),
                u.i.payload.a.eq(Mux(r_pass2, _ONE, r_c)),
                u.i.payload.b.eq(Mux(r_pass2, scr_rd.data[lane], row_rd.data[lane])),
                u.i.payload.c.eq(Mux(r_pass1, _NEG_ZERO, acc)),
                u.o.ready.eq(1),                 # always taken: the FMAs never stall
            ]
            outs.append(u.o.payload)

        # ---- write ------------------------------------------------------------------
        result = Cat(*outs)
        m.d.comb += [
            ps_wr.addr.eq(p_addr[L]), ps_wr.data.eq(result),
            ps_wr.en.eq(p_valid[L] & ~p_scr[L]),
            scr_wr.addr.eq(p_addr[L]), scr_wr.data.eq(result),
            scr_wr.en.eq(p_valid[L] & p_scr[L]),
        ]

        m.d.comb += self.busy.eq(r_valid | Cat(*p_valid[1:]).any() | (j != 0) | second)
        return m
