"""Fold datapath: the vector PE and the aggregation buffer that execute the sharing
scheduler's operations (:mod:`.scheduler`), one *wide beat* of ``lanes`` binary32 lanes per
cycle (16 lanes: a 64-byte memory beat a cycle; 32 lanes: two; 64 lanes: four).

An operation ``{dst, src, src_zero, item, item_first, c, kind, final}`` means, lane by lane
over the D/16 beats of a row,

* kind 0: ``PS[dst] = fma(c, ROW, src_zero ? +0 : PS[src])`` (one rounding);
* kind 1: ``PS[dst] = fl(fl(c * ROW) + (src_zero ? +0 : PS[src]))`` (two roundings: the
  ``dedup`` merge of a mean-pooled gradient, docs/design.md section 2).

``ROW`` is the current item's row.  An operation with ``item_first`` starts the next item;
its row is the next one on ``rows`` (wide beats, D/lanes a row), which are loaded ahead into
a ring of row slots (one row per item, in item order); the item's later operations read the
same slot.  Rows come a wide beat a cycle (the row store gives forward's rows a word at a
time; :mod:`.beat_packer` packs the memory beats of backward's gradient rows), so an item
whose row is used once costs one cycle at D = lanes, not the D/16 cycles of a memory beat a
cycle.
A *final* (``final`` set: ``dst`` is the member, ``src`` the class holding its result)
sends the D/lanes wide beats of ``PS[src]`` (``+0`` beats when ``src_zero``) to ``results``; it
reads like an operation and writes nothing, so finals come in the same stream, anywhere
after the operation that wrote their class.

Operations wait in an issue *window* of ``window`` entries and need not start in the order
they came: each cycle in which the current operation issues its last beat, the oldest
waiting one whose row is loaded, that depends on no older waiting one (read after write,
write after read or write after write on a partial sum) and whose first beat would not
wait for the FMA pipeline starts next.  The sums are therefore exactly those of the
program order, but a chain that waits for its accumulator no longer holds back the
independent operations behind it.

Pipeline (one beat in flight per stage)::

    window --  an operation taken from ``ops`` waits here; the next one is chosen
    issue  --  the current operation's (or final's) beat: PS / row / scratch read addresses,
               hazard check
    R      --  read data; operands into the 16 FMAs, or a final's beat on ``results``
    FMA x L -- (L = FusedMultiplyAdd.latency, 13 by default as written; never stalled); in the
               cycle the results leave the FMAs they are written to PS (or the scratch row)

Kind 1 runs as two passes of the same FMAs, both exact: ``fl(c*x) = fma(c, x, -0)`` (a zero
product keeps its sign, since ``±0 + -0 = ±0``; any other product is rounded once, with
its own sign if it underflows to zero) into a one-row scratch buffer, then
``fl(p + acc) = fma(1, p, acc)``.  Kinds 2 and 3 are reserved: they execute as kind 0 and
set the sticky ``error`` bit.
"""
from amaranth.hdl import Array, C, Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.common import check_pipeline
from ..fp.fma import FusedMultiplyAdd

__all__ = ["FoldDatapath", "LANES", "BEAT_BITS", "LANE_CHOICES", "lanes_for"]

LANES = 16                  # binary32 lanes of one 512-bit memory beat
MAX_WINDOW = 16             # operations waiting to start (the choice is W x (W + L) compares)
# The default window's cap, by lanes: the choice logic grows as W x (W + L), whatever the
# lanes.  Beside 64 FMAs a window of 8 pays: on the first part of the Meta-calibrated trace's
# forward job (scheduler and datapath alone, rows always there) 2,252 -> 1,846 cycles in
# dedup, 2,211 -> 1,976 in refree, the datapath's Verilog 12.6 -> 16.1 MB (14, enough for a
# whole read-after-write wait: 1,631 and 1,903 cycles, 27.3 MB).
DEFAULT_MAX_WINDOW = {16: 4, 32: 4, 64: 8}
BEAT_BITS = 32 * LANES
_ONE = 0x3F800000
_NEG_ZERO = 0x80000000


LANE_CHOICES = (16, 32, 64)  # the engine's datapath widths: 1, 2 or 4 memory beats a cycle


def lanes_for(dim, lanes):
    """The lanes of the engine's fold datapath for vector length ``dim`` when configured
    for ``lanes`` (one of LANE_CHOICES): the widest choice up to ``lanes`` that divides
    ``dim`` (a row is whole wide beats; D = 48 gets 16 lanes whatever the configuration)."""
    if lanes not in LANE_CHOICES:
        raise ValueError(f"fold lanes must be one of {', '.join(map(str, LANE_CHOICES))}, not {lanes!r}")
    return max(k for k in LANE_CHOICES if k <= lanes and dim % k == 0)


def _positive_int(v):
    return not isinstance(v, bool) and isinstance(v, int) and v >= 1


class FoldDatapath(wiring.Component):
    """Vector PE (``lanes`` binary32 FMAs) and aggregation buffer (the partial sums).

    Parameters
    ----------
    dim : int
        Vector length D, a positive multiple of ``lanes``; a row is ``D/lanes`` wide beats.
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
    window : int, optional
        Operations that can wait to start, 1 (in order) to 16; default
        ``ceil((L + 1) / (D/lanes))``, at least 2 and at most 4 (8 at 64 lanes): enough
        independent operations to cover one read-after-write wait from D = 64 on at 16 lanes
        (4 there; 14 would be needed at D = 16, and at D = lanes).  The choice costs about
        ``window * (window + L)`` address comparisons: at D = 16 a window of 14 made the
        datapath's Verilog 8.7 MB against 2.4 MB with 4 and 1.9 MB in order (measured), and
        the engine's Verilator build impractical, hence
        the cap.  ``window + 2`` row slots.
    lanes : int, optional
        binary32 lanes (FMAs), a multiple of 16 (default 16): the width of a wide beat,
        ``lanes // 16`` memory beats.

    Attributes
    ----------
    beats : int
        Wide beats per row, ``dim // lanes``.
    beat_bits : int
        Bits of a wide beat, ``32 * lanes``.
    fma_latency : int
        ``L``, cycles through one FMA.
    latency : int
        ``L + 1``: cycles from an operation beat's issue (the cycle it is taken) to the cycle
        its result is written; a beat that reads the same partial-sum beat can issue in that
        write cycle (the read is transparent), no earlier.
    Op, Result : data.StructLayout
        Payload layouts; ``Op`` is identical to the scheduler's.

    Members
    -------
    start : In(1)
        Pulse: a new part; it clears ``error``.
    ops : In(stream.Signature(Op))
        Operations and finals.  Unknown ``src`` contents (a class never written) give
        undefined data.
    rows : In(stream.Signature(32 * lanes))
        The wide beats of the items' rows in item order, ``D/lanes`` per item, lane ``k`` in
        bits ``32k .. 32k+31``; one item per operation with ``item_first``.
    results : Out(stream.Signature(Result))
        ``{member, beat, data, last}``: the ``D/lanes`` wide beats of each final (``beat``
        counts wide beats, ``data`` is ``beat_bits`` wide), ``last`` on the final beat.
    busy : Out(1)
        Work in flight: an operation or final partly issued, a beat in R (an operation
        beat, or a result beat not yet taken) or in the FMAs.  Low with no operation or final
        presented means every result has been delivered and every write done.
    error : Out(1)
        Sticky: an operation with a reserved kind (2 and up, when ``kind_bits > 1``) was
        executed (as kind 0).

    Notes
    -----
    Storage: the partial sums are one memory of ``num_classes * D/lanes`` words of
    ``32 * lanes`` bits (class ``q`` beat ``j`` at word ``q * D/lanes + j``) with one
    synchronous read port, transparent to its one write port; the row slots are
    ``(window + 2) * D/lanes`` words and the scratch row (kind 1) ``D/lanes``.  (Below, a
    beat is a wide beat and ``D/16`` reads ``D/lanes`` when ``lanes`` is not 16.)

    Throughput: one wide beat per cycle (a kind-0 operation every ``D/lanes`` cycles, a
    final every ``D/lanes`` cycles) while ``rows``, ``ops`` and ``results`` keep up and the window holds
    an operation (or final) that need not wait; a kind-1 operation takes ``2 * D/16``
    beats plus ``max(0, L + 1 - D/16)`` cycles (its sum pass waits for its product pass).
    An operation issues at the earliest two cycles after it was taken.  Measured at D = 16
    (with any L): 48 independent operations are taken in 48 consecutive cycles, and from
    the first operation taken to the last result beat of 16 finals takes
    ``48 + 16 + L + 3`` cycles (the fill: two cycles through the window, then the first
    final waiting for the last operation's write); four chains of six dependent operations
    presented one after the other take 120 cycles with the default window against 304 in
    order (window 1).

    Hazards (read after write): a beat that reads ``PS[q]`` beat ``j`` (an operation's or a
    final's ``src``) waits while an issued beat that writes ``PS[q]`` beat ``j``
    is still in R or in the FMAs: a comparison with the ``L`` write tags of the pipeline,
    per beat, so only true conflicts wait.  An operation that reads the partial sum
    written by the operation just before it in issue order therefore waits
    ``max(0, L + 1 - D/16)`` cycles at its first beat (13 cycles at D = 16, 12 at D = 32,
    none from D = 224 on) unless the window has another operation to start instead.
    Operations waiting in the window are ordered by the dependency rule above.
    The sum pass of a kind-1 operation waits for the scratch row the same way.  There
    are no write-after-read hazards: reads happen at issue, in issue order, and a beat
    writes ``L + 1`` cycles after its own issue, so every write comes after the reads of all
    earlier beats (this covers a recycled class written just after its last reader, a
    final followed by operations that write its class, and the row and scratch buffers).
    Writes happen in issue order (fixed latency): no write-after-write hazards either.
    A row slot is reloaded only once no operation of its item waits or issues and a later
    item has begun.

    Latency: a result beat appears on ``results`` the cycle after it issues, so at the
    earliest ``L + 2`` cycles after the operation beat that wrote its partial sum issued
    (measured: exactly that, 15 cycles at L = 13).

    Backpressure: the FMAs' outputs are always taken (they never stall); only ``results``
    can stall, which holds a result beat (and the issue stage) in R; operations already in
    the FMAs complete.  ``ops.ready`` depends on ``ops.payload.item_first`` and registers,
    ``rows.ready`` on registers only.

    Reset: the pipeline, the window, the row slots and the issue state empty (``error``
    low).  The partial sums, the rows and the scratch row keep undefined
    contents: every class
    is written before a correct program reads it.
    """

    def __init__(self, dim, num_classes, node_bits, item_bits, kind_bits=2, *,
                 fma_pipeline=None, window=None, lanes=LANES):
        if not _positive_int(lanes) or lanes % LANES:
            raise ValueError(f"FoldDatapath lanes must be a positive multiple of {LANES}, not {lanes!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or dim % lanes:
            raise ValueError(f"FoldDatapath dim must be a positive multiple of {lanes}, "
                             f"not {dim!r}")
        for name, v in (("num_classes", num_classes), ("node_bits", node_bits),
                        ("item_bits", item_bits), ("kind_bits", kind_bits)):
            if not _positive_int(v):
                raise ValueError(f"FoldDatapath {name} must be a positive integer, not {v!r}")
        if num_classes > 1 << node_bits:
            raise ValueError(f"FoldDatapath node_bits must number num_classes={num_classes} "
                             f"classes (at least {(num_classes - 1).bit_length()}), "
                             f"not {node_bits!r}")
        self.dim, self.lanes = dim, lanes
        self.beats = dim // lanes
        self.beat_bits = 32 * lanes
        self.num_classes = num_classes
        self._fma_pipeline = fma_pipeline
        self.fma_latency = len(check_pipeline("FusedMultiplyAdd", FusedMultiplyAdd.STAGES,
                                              FusedMultiplyAdd.DEFAULT_PIPELINE, fma_pipeline))
        self.latency = self.fma_latency + 1
        if window is None:      # enough operations to cover one read-after-write wait
            window = min(DEFAULT_MAX_WINDOW.get(lanes, 4), max(2, -(-self.latency // self.beats)))
        if not _positive_int(window) or window > MAX_WINDOW:
            raise ValueError(f"FoldDatapath window must be an integer from 1 to {MAX_WINDOW}, "
                             f"not {window!r}")
        self.window = window
        self.row_slots = window + 2
        nb = node_bits
        self.Op = data.StructLayout({"dst": nb, "src": nb, "src_zero": 1, "item": item_bits,
                                     "item_first": 1, "c": 32, "kind": kind_bits, "final": 1})
        self._Entry = data.StructLayout({"dst": nb, "src": nb, "src_zero": 1, "c": 32,
                                         "kind": kind_bits, "final": 1,
                                         "slot": max(1, (self.row_slots - 1).bit_length())})
        beat_bits = max(1, (self.beats - 1).bit_length())
        self.Result = data.StructLayout({"member": nb, "beat": beat_bits, "data": self.beat_bits,
                                         "last": 1})
        super().__init__({
            "start": In(1),
            "ops": In(stream.Signature(self.Op)),
            "rows": In(stream.Signature(self.beat_bits)),
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
        B, L, W, S = self.beats, self.fma_latency, self.window, self.row_slots
        depth = self.num_classes * B
        beat_bits = max(1, (B - 1).bit_length())
        slot_bits = max(1, (S - 1).bit_length())
        wide = self.beat_bits

        # ---- storage ----------------------------------------------------------------
        m.submodules.ps = ps = memory.Memory(shape=wide, depth=depth, init=[])
        ps_wr = ps.write_port()
        ps_rd = ps.read_port(transparent_for=(ps_wr,))
        m.submodules.row = row = memory.Memory(shape=wide, depth=S * B, init=[])
        row_wr = row.write_port()
        row_rd = row.read_port()
        m.submodules.scratch = scratch = memory.Memory(shape=wide, depth=B, init=[])
        scr_wr = scratch.write_port()
        scr_rd = scratch.read_port(transparent_for=(scr_wr,))
        addr_shape = len(ps_wr.addr)

        # ---- row slots: rows loaded ahead, in item order round the ring ----------------
        full = Signal(S)                        # slot holds a row not yet released
        alloc = Signal(S)                       # slot given to an item by its first operation
        ld_slot, ld_beat = Signal(range(S)), Signal(beat_bits)
        last_alloc = Signal(range(S), init=S - 1)   # slot of the latest item
        next_alloc = Mux(last_alloc == S - 1, 0, last_alloc + 1)
        loading = self.rows.valid & ~full.bit_select(ld_slot, 1)
        m.d.comb += [self.rows.ready.eq(~full.bit_select(ld_slot, 1)),
                     row_wr.addr.eq(ld_slot * B + ld_beat), row_wr.data.eq(self.rows.payload),
                     row_wr.en.eq(loading)]
        set_full = Signal(S)
        with m.If(loading):
            m.d.sync += ld_beat.eq(Mux(ld_beat == B - 1, 0, ld_beat + 1))
            with m.If(ld_beat == B - 1):
                m.d.comb += set_full.eq(1 << ld_slot)
                m.d.sync += ld_slot.eq(Mux(ld_slot == S - 1, 0, ld_slot + 1))

        # ---- issue state ------------------------------------------------------------
        Entry = self._Entry
        win = [Signal(Entry, name=f"win{i}") for i in range(W)]   # oldest first
        count = Signal(range(W + 1))
        cur, cur_valid = Signal(Entry), Signal()    # the operation issuing its beats
        j = Signal(beat_bits)                   # beat of the operation or final at the head
        second = Signal()                       # the second pass of a kind-1 operation
        error = Signal()
        m.d.comb += self.error.eq(error)
        last_beat = j == B - 1

        # ---- stage R (registered at issue) ------------------------------------------
        r_valid, r_final = Signal(), Signal()
        r_pass1, r_pass2 = Signal(), Signal()   # kind 1: product pass, sum pass
        r_c = Signal(32)
        r_src_zero, r_last = Signal(), Signal()
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

        def pending_write(addr, to_scratch, tags=L):
            """A beat in tags ``0 .. tags-1`` still on its way to ``addr``."""
            hits = [p_valid[k] & (p_scr[k] == to_scratch) & (p_addr[k] == addr)
                    for k in range(tags)]
            return Cat(*hits).any() if hits else C(0, 1)

        # ---- issue: the current operation's beats, or a final's ----------------------
        r_result = r_valid & r_final
        hold = r_result & ~self.results.ready                # a result beat waits in R
        kind1 = cur.kind == 1
        reserved = cur.kind >= 2
        pass1 = kind1 & ~second
        reads_ps = ~cur.src_zero & (~kind1 | second)
        src_addr, dst_addr = Signal(addr_shape, name="src_addr"), Signal(addr_shape, name="dst_addr")
        m.d.comb += [src_addr.eq(cur.src * B + j), dst_addr.eq(cur.dst * B + j)]
        hazard = (reads_ps & pending_write(src_addr, 0)) | (kind1 & second & pending_write(j, 1))
        fire = cur_valid & ~hold & ~hazard
        fire_op, fire_fin = fire & ~cur.final, fire & cur.final
        op_done = fire & last_beat & (~kind1 | second)

        m.d.comb += [
            ps_rd.addr.eq(src_addr),
            # Reads only for a beat that issues: a waiting result beat keeps its data, and
            # idle cycles leave the lanes' operands (and their switching) alone.
            ps_rd.en.eq(fire),
            row_rd.addr.eq(cur.slot * B + j), row_rd.en.eq(fire_op),
            scr_rd.en.eq(fire_op),
        ]
        with m.If(fire):
            m.d.sync += j.eq(Mux(last_beat, 0, j + 1))
        with m.If(fire_op & last_beat & kind1):
            m.d.sync += second.eq(~second)
        with m.If(fire_op & reserved):
            m.d.sync += error.eq(1)
        with m.If(self.start):
            m.d.sync += error.eq(0)

        with m.If(~hold):
            m.d.sync += r_valid.eq(fire)
        with m.If(fire):
            m.d.sync += [r_final.eq(fire_fin),
                         r_pass1.eq(fire_op & pass1), r_pass2.eq(fire_op & kind1 & second),
                         r_c.eq(cur.c), r_src_zero.eq(cur.src_zero),
                         r_member.eq(cur.dst), r_beat.eq(j), r_last.eq(last_beat),
                         r_addr.eq(Mux(pass1, j, dst_addr))]

        # ---- the window: which waiting operation starts next --------------------------
        # Chosen in the cycle the current operation issues its last beat (or when there is
        # none), so that the chosen one issues its first beat in the next cycle: the oldest
        # entry whose row is loaded, that depends on no older entry (read after write,
        # write after read, write after write on a partial sum) and whose first beat's
        # read will not wait (the beats in flight at tags 0 .. L-2 and the one issuing
        # now).  Kind 1 needs no rule: both its passes run back to back as the current
        # operation, so the one-row scratch is never shared.  A final needs no row and
        # writes nothing; finals keep their order (results leave in the order of ``ops``).
        issuing_ps = fire_op & ~pass1
        ok = []
        for k, e in enumerate(win):
            first_read = Signal(addr_shape, name=f"win{k}_read")
            m.d.comb += first_read.eq(e.src * B)
            reads_first = ~e.src_zero & (e.kind != 1)
            waits = reads_first & (pending_write(first_read, 0, tags=L - 1) |
                                   issuing_ps & (dst_addr == first_read))
            writes = ~e.final
            depends = [(~e.src_zero & ~o.final & (o.dst == e.src)) | (writes & ~o.src_zero & (o.src == e.dst)) |
                       (writes & ~o.final & (o.dst == e.dst)) | (e.final & o.final) for o in win[:k]]
            ok.append((count > k) & (full.bit_select(e.slot, 1) | e.final) & ~waits &
                      ~(Cat(*depends).any() if depends else C(0, 1)))
        sel = Signal(range(W))
        for k in reversed(range(W)):
            with m.If(ok[k]):
                m.d.comb += sel.eq(k)
        advance = ~cur_valid | op_done
        take = advance & Cat(*ok).any()
        with m.If(advance):
            m.d.sync += cur_valid.eq(take)
        with m.If(take):
            m.d.sync += cur.eq(Array(w.as_value() for w in win)[sel])

        # New operations enter behind the others; the first of an item takes the next slot
        # of the ring once the item that had it is done.
        op = self.ops.payload
        accept = (count < W) & ~(op.item_first & alloc.bit_select(next_alloc, 1))
        push = self.ops.valid & accept
        new = Signal(Entry)
        m.d.comb += [self.ops.ready.eq(accept),
                     new.dst.eq(op.dst), new.src.eq(op.src), new.src_zero.eq(op.src_zero),
                     new.c.eq(op.c), new.kind.eq(op.kind), new.final.eq(op.final),
                     new.slot.eq(Mux(op.item_first, next_alloc, last_alloc))]
        set_alloc = Signal(S)
        with m.If(push & op.item_first):
            m.d.comb += set_alloc.eq(1 << next_alloc)
            m.d.sync += last_alloc.eq(next_alloc)
        pos = count - take
        for i in range(W):
            later = win[i + 1].as_value() if i + 1 < W else C(0, Entry.size)
            taken_or_before = (sel <= i) if i < W - 1 else C(1, 1)     # (always, for the last)
            kept = Mux(take & taken_or_before, later, win[i].as_value())
            m.d.sync += win[i].eq(Mux(push & (pos == i), new.as_value(), kept))
        m.d.sync += count.eq(count - take + push)

        # A slot is released when no operation of its item waits or issues and no more can
        # come (a later item has started).
        release = Signal(S)
        for s in range(S):
            used = [(count > i) & ~e.final & (e.slot == s) for i, e in enumerate(win)]
            used.append(cur_valid & ~cur.final & (cur.slot == s))
            m.d.comb += release[s].eq(alloc[s] & full[s] & ~Cat(*used).any() & (last_alloc != s))
        m.d.sync += [full.eq((full | set_full) & ~release),
                     alloc.eq((alloc | set_alloc) & ~release)]

        # ---- R: results ---------------------------------------------------------------
        res = self.results.payload
        m.d.comb += [self.results.valid.eq(r_valid & r_final),
                     res.member.eq(r_member), res.beat.eq(r_beat), res.last.eq(r_last),
                     res.data.eq(Mux(r_src_zero, 0, ps_rd.data))]

        # ---- R: the lanes -------------------------------------------------------------
        outs = []
        for k in range(self.lanes):
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
            scr_wr.data.eq(result), scr_wr.en.eq(p_valid[L] & p_scr[L]),
        ]
        # (a scratch row of one beat, D = lanes, has no address to drive: a zero-width
        # address would reach the Verilog as an ascending range [-1:0])
        if len(scr_rd.addr):
            m.d.comb += [scr_rd.addr.eq(j), scr_wr.addr.eq(p_addr[L])]

        m.d.comb += self.busy.eq(r_valid | Cat(*p_valid[1:]).any() | (j != 0) | second |
                                 cur_valid | (count != 0))
        return m
