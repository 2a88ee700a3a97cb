"""The DDR4 command engine of one rank: bank state machines, every JEDEC spacing of the
timing table, refresh, and a request stream of 64-byte bursts answered in request order.

Scheduling (FR-FCFS, first ready first, with write batching).  Requests wait in a window of
``window`` entries, oldest first.  A column command (RD, WR) may issue for any entry whose
row is open and whose spacings allow it, the oldest such entry first, so a row that waits
for its bank does not hold back the ready rows behind it.  Order is kept where it matters:
no entry passes an older one to the same burst address when either writes (read after
write, write after read, write after write).  A write's data waits in a slot of its own
(``window + CWL / 4 + 2`` slots) until CWL clocks after its WR.  Reads go first; once
``write_high`` writes wait in the window the engine drains writes until ``write_low`` are
left, so that the data bus turns around once for a batch of writes.  Either way the other
kind goes when none of the preferred kind can and the oldest entry is of the other kind (the
oldest entry never waits for a younger one, so nothing deadlocks).  Read data returns in
issue order; each read carries a tag (its place in request order among the reads) and waits
in a reorder buffer of ``read_depth`` bursts until the reads before it have left, so ``rsp``
is in request order.  Row commands (PRE, ACT) may be issued for any entry of the window
whose bank no older entry uses, so the banks of the next requests are opened while the
current one transfers (bank-level parallelism).  Rows stay open after an access (open-row
policy) and are closed only by a conflict or a refresh.

Refresh: one REF is owed every ``tREFI`` clocks.  An owed REF is done as soon as the window
is empty (the engine has nothing to read or write), or, with traffic, once
``postpone_limit`` are owed (at most 8, JEDEC's limit, so two REFs are never more than
9 x tREFI apart); then new column and row commands wait, the open banks are closed with one
PREA and the REF issued.

Timing: every spacing is a countdown register loaded, when a command issues, with the
spacing minus one, in the scope the rule has (bank, bank group, rank); a command may issue
when every countdown of its scope is zero.  tFAW is a ring of the last four ACTs.
"""
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .commands import A10
from .geometry import RankGeometry
from .timing import MAX_POSTPONED_REFRESHES, Timing

__all__ = ["RankController", "BURST_BITS", "dfi_signature", "check_controller_params"]

BURST_BITS = 512            # one BL8 burst of a 64-bit rank


def dfi_signature(geometry):
    """The rank side of the controller, as the controller drives it: the command pins (see
    :mod:`.commands`) registered, and the data of a whole BL8 burst in the clock its first
    beat is on the bus (``wrdata`` at WR + CWL, ``rddata`` at RD + CL).  A PHY spreads the
    burst over its four clocks; the timing rules keep bursts four clocks apart."""
    g = geometry
    return wiring.Signature({
        "cs_n": Out(1, init=1), "act_n": Out(1, init=1), "ras_n": Out(1, init=1),
        "cas_n": Out(1, init=1), "we_n": Out(1, init=1),
        "bg": Out(max(1, (g.bank_groups - 1).bit_length())),
        "ba": Out(max(1, (g.banks_per_group - 1).bit_length())),
        "a": Out(18),
        "wrdata_en": Out(1), "wrdata": Out(BURST_BITS),
        "rddata_valid": In(1), "rddata": In(BURST_BITS)})


class _Countdown:
    """A register that counts down to zero; a command "loads" it with a spacing of ``t``
    clocks (``t - 1``, so that the guarded command may issue ``t`` clocks later)."""

    def __init__(self, name, max_clocks):
        self.value = Signal(range(max(2, max_clocks)), name=name)
        self._loads = []

    @property
    def zero(self):
        return self.value == 0

    def load(self, cond, clocks):
        if clocks > 1:
            self._loads.append((cond, clocks - 1))

    def elaborate(self, m):
        nxt = Mux(self.value == 0, 0, self.value - 1)
        for cond, v in self._loads:
            nxt = Mux(cond & (nxt < v), v, nxt)
        m.d.sync += self.value.eq(nxt)


def check_controller_params(prefix, *, window, read_depth, write_high, write_low, postpone_limit):
    """The rank engine's parameters, checked (a ``ValueError`` naming ``prefix + name``): the
    one statement of their ranges, for :class:`RankController` and ``DramParams``.  Returns
    ``(write_high, write_low)``, ``None`` for either meaning ``window // 2`` (at least 1) and
    ``window // 4``."""
    def check(name, v, lo, hi, where=""):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{prefix}{name} must be an integer in [{lo}, {hi}]{where}, not {v!r}")
    check("window", window, 1, 32)
    check("read_depth", read_depth, 2, 64)
    check("postpone_limit", postpone_limit, 1, MAX_POSTPONED_REFRESHES)
    write_high = max(1, window // 2) if write_high is None else write_high
    write_low = window // 4 if write_low is None else write_low
    check("write_high", write_high, 1, window, f" (window {window})")
    check("write_low", write_low, 0, write_high - 1, f" (window {window})")
    return write_high, write_low


class RankController(wiring.Component):
    """Command engine of one DDR4 rank (see the module docstring).

    Parameters
    ----------
    timing : Timing
        Clock counts of the speed grade (:meth:`~refree.hw.ddr4.SpeedGrade.timing`).
    geometry : RankGeometry
    window : int
        Requests that wait for their row and column commands, 1 to 32 (default 16).
    read_depth : int
        Reads accepted and not yet taken on ``rsp`` (in the window, in flight or in the
        reorder buffer), 2 to 64 (default 32): the reorder buffer's bursts.  ``rsp``
        backpressure never loses data.
    write_high, write_low : int
        Write batching: writes waiting in the window at which the engine starts draining
        them, and at which it stops (``0 <= write_low < write_high <= window``; defaults
        ``window // 2`` and ``window // 4``).
    postpone_limit : int
        Owed REFs at which refresh takes priority over traffic, 1 to 8 (default 8).

    Members
    -------
    req : In(stream.Signature(Request))
        ``loc``: the burst's place in the rank (``burst``, its column / 8; ``bg``, ``ba``,
        ``row``), ``write`` and the burst's ``data``.
    rsp : Out(stream.Signature(512))
        Read bursts in request order (through the reorder buffer).
    dfi : Out(dfi_signature(geometry))
    idle : Out(1)
        No request waiting, no read or write data in flight.
    all_closed : Out(1)
        Every bank precharged.
    refreshed : Out(1)
        No REF owed.  Owed REFs are paid as soon as the window is empty, so after the
        traffic ends this rises within a REF or so per owed one (up to ``postpone_limit``).
    stats : Out(Stats)
        Commands issued since reset: ``acts``, ``reads``, ``writes``, ``pres`` (banks closed,
        a PREA counting each), ``refs``; ``hits`` (RD/WR to a row opened for an earlier
        access).

    Latency: a request taken in cycle ``c`` can have its command on the pins in cycle
    ``c + 2`` at the earliest (a row hit); its read data reaches ``rsp`` the cycle after it
    arrives on ``rddata`` when every earlier read has left.

    Reset: all banks precharged, no REF owed, countdowns zero (a device leaves
    initialisation precharged and idle).
    """

    def __init__(self, timing, geometry=RankGeometry(), *, window=16, read_depth=32,
                 write_high=None, write_low=None, postpone_limit=MAX_POSTPONED_REFRESHES):
        if not isinstance(timing, Timing):
            raise ValueError(f"RankController timing must be a Timing, not {timing!r}")
        if not isinstance(geometry, RankGeometry):
            raise ValueError(f"RankController geometry must be a RankGeometry, not {geometry!r}")
        write_high, write_low = check_controller_params(
            "RankController ", window=window, read_depth=read_depth, write_high=write_high,
            write_low=write_low, postpone_limit=postpone_limit)
        self.write_high, self.write_low = write_high, write_low
        self.timing, self.geometry = timing, geometry
        self.window, self.read_depth, self.postpone_limit = window, read_depth, postpone_limit
        g = geometry
        self.burst_bits = (g.bursts_per_row - 1).bit_length()
        self.bg_bits = (g.bank_groups - 1).bit_length()
        self.ba_bits = (g.banks_per_group - 1).bit_length()
        self.row_bits = (g.rows - 1).bit_length()
        self.Location = data.StructLayout({"burst": self.burst_bits, "bg": self.bg_bits,
                                           "ba": self.ba_bits, "row": self.row_bits})
        self.Request = data.StructLayout({"loc": self.Location, "write": 1, "data": BURST_BITS})
        self.Stats = data.StructLayout({k: 32 for k in
                                        ("acts", "reads", "writes", "pres", "refs", "hits")})
        super().__init__({"req": In(stream.Signature(self.Request)),
                          "rsp": Out(stream.Signature(BURST_BITS)),
                          "dfi": Out(dfi_signature(geometry)),
                          "idle": Out(1), "all_closed": Out(1), "refreshed": Out(1),
                          "stats": Out(self.Stats)})

    def elaborate(self, platform):
        m = Module()
        t, g = self.timing, self.geometry
        W, NB, NG = self.window, g.banks, g.bank_groups
        bank_bits = max(1, (NB - 1).bit_length())

        # ---- the window: requests oldest first --------------------------------------
        D = self.read_depth
        WD = W + t.CWL // 4 + 2                 # write bursts: waiting, or on their way to the pins
        tag_bits = max(1, (D - 1).bit_length(), (WD - 1).bit_length())
        Entry = data.StructLayout({"burst": max(1, self.burst_bits), "bank": bank_bits,
                                   "row": max(1, self.row_bits), "write": 1,
                                   # a read's slot in the reorder buffer, a write's in the write data
                                   "tag": tag_bits})
        win = [Signal(Entry, name=f"win{i}") for i in range(W)]
        count = Signal(range(W + 1))
        writes_waiting = Signal(range(W + 1))

        # ---- bank state -------------------------------------------------------------
        bank_open = Signal(NB)
        bank_row = Array(Signal(max(1, self.row_bits), name=f"bank_row{b}") for b in range(NB))
        bank_used = Signal(NB)          # an access since the bank's ACT (row-hit statistics)

        def group_of(bank):
            return bank >> self.ba_bits if self.ba_bits else bank

        # ---- countdowns -------------------------------------------------------------
        top = max(t.tRC, t.tRP, t.tRCD, t.tRAS, t.tRTP, t.wr_to_pre, t.tRRD_L, t.tRRD_S,
                  t.tCCD_L, t.tCCD_S, t.wr_to_rd_l, t.wr_to_rd_s, t.rd_to_wr, t.tRFC, t.tFAW) + 1
        act_b = [_Countdown(f"act_ok{b}", top) for b in range(NB)]     # tRC, tRP
        cas_b = [_Countdown(f"cas_ok{b}", top) for b in range(NB)]     # tRCD
        pre_b = [_Countdown(f"pre_ok{b}", top) for b in range(NB)]     # tRAS, tRTP, WR->PRE
        act_g = [_Countdown(f"act_g{i}", top) for i in range(NG)]      # tRRD_L
        rd_g = [_Countdown(f"rd_g{i}", top) for i in range(NG)]        # tCCD_L, WR->RD _L
        wr_g = [_Countdown(f"wr_g{i}", top) for i in range(NG)]        # tCCD_L
        act_r, rd_r, wr_r, ref_r = (_Countdown(n, top) for n in ("act_r", "rd_r", "wr_r", "ref_r"))
        faw = [_Countdown(f"faw{i}", top) for i in range(4)]           # the last four ACTs
        faw_ptr = Signal(2)                                            # the oldest of them
        countdowns = act_b + cas_b + pre_b + act_g + rd_g + wr_g + [act_r, rd_r, wr_r, ref_r] + faw

        def zero_at(counters, index):
            return Cat(*[c.zero for c in counters]).bit_select(index, 1)

        # ---- refresh ----------------------------------------------------------------
        refi = Signal(range(t.tREFI))
        owed = Signal(range(MAX_POSTPONED_REFRESHES + 2))
        with m.If(refi == t.tREFI - 1):
            m.d.sync += refi.eq(0)
        with m.Else():
            m.d.sync += refi.eq(refi + 1)
        refresh = (owed != 0) & ((count == 0) | (owed >= self.postpone_limit))
        pre_all_ok = Cat(*[~bank_open[b] | pre_b[b].zero for b in range(NB)]).all()

        # ---- column commands: the oldest entry that may go, reads first -------------------
        def same_address(a, b):
            return (a.bank == b.bank) & (a.row == b.row) & (a.burst == b.burst)

        ready_rd, ready_wr = Signal(W), Signal(W)
        for i, e in enumerate(win):
            older = win[:i]
            # no passing an older access to the same burst when either writes
            blocked = Cat(*[same_address(e, o) & (e.write | o.write)
                            for o in older]).any() if older else C(0, 1)
            group = group_of(e.bank)
            hit = (i < count) & bank_open.bit_select(e.bank, 1) & (bank_row[e.bank] == e.row) & \
                zero_at(cas_b, e.bank) & ~blocked
            m.d.comb += [ready_rd[i].eq(hit & ~e.write & zero_at(rd_g, group) & rd_r.zero),
                         ready_wr[i].eq(hit & e.write & zero_at(wr_g, group) & wr_r.zero)]
        draining = Signal()             # writes preferred until write_low are left
        with m.If(writes_waiting >= self.write_high):
            m.d.sync += draining.eq(1)
        with m.Elif(writes_waiting <= self.write_low):
            m.d.sync += draining.eq(0)
        # the preferred kind if any is ready, else the other kind if the oldest entry is of it
        head_writes = win[0].write
        go_write = ready_wr.any() & (draining | ~ready_rd.any() & head_writes)
        go_read = ready_rd.any() & (~draining | ~ready_wr.any() & ~head_writes)
        ready = Mux(go_write, ready_wr, ready_rd)
        cas_pick = Signal(range(W))
        for i in reversed(range(W)):
            with m.If(ready[i]):
                m.d.comb += cas_pick.eq(i)
        cas_ok = ~refresh & (go_write | go_read)
        cas_entry = Array(win)[cas_pick]

        # ---- row commands: the oldest entry of its bank that needs one --------------
        pick_valid, pick = Signal(), Signal(range(W))
        pick_act = Signal()
        act_ok_rank = act_r.zero & zero_at(faw, faw_ptr)
        for i in reversed(range(W)):
            e = win[i]
            older_same_bank = Cat(*[win[j].bank == e.bank for j in range(i)]).any() if i else C(0, 1)
            is_open = bank_open.bit_select(e.bank, 1)
            can_act = ~is_open & zero_at(act_b, e.bank) & zero_at(act_g, group_of(e.bank)) & act_ok_rank
            can_pre = is_open & (bank_row[e.bank] != e.row) & zero_at(pre_b, e.bank)
            with m.If((i < count) & ~older_same_bank & (can_act | can_pre)):
                m.d.comb += [pick_valid.eq(1), pick.eq(i), pick_act.eq(can_act)]
        picked = Array(win)[pick]

        # ---- the command of this cycle ----------------------------------------------
        do_rd, do_wr, do_act, do_pre, do_prea, do_ref = (Signal(name=n) for n in
                                                         ("do_rd", "do_wr", "do_act", "do_pre",
                                                          "do_prea", "do_ref"))
        with m.If(refresh):
            with m.If(bank_open.any()):
                m.d.comb += do_prea.eq(pre_all_ok)
            with m.Else():
                m.d.comb += do_ref.eq(ref_r.zero)
        with m.Elif(cas_ok):
            m.d.comb += [do_rd.eq(~cas_entry.write), do_wr.eq(cas_entry.write)]
        with m.Elif(pick_valid):
            m.d.comb += [do_act.eq(pick_act), do_pre.eq(~pick_act)]

        cmd_bank = Mux(do_rd | do_wr, cas_entry.bank, picked.bank)
        cmd_group = group_of(cmd_bank)
        dfi = self.dfi
        bg_of = cmd_bank >> self.ba_bits if self.ba_bits else cmd_bank
        ba_of = cmd_bank[:self.ba_bits] if self.ba_bits else 0
        col = Cat(C(0, 3), cas_entry.burst)       # first column of the burst: burst * 8
        row = picked.row
        # pins (registered): see commands.py for the truth table
        pins = {"cs_n": 1, "act_n": 1, "ras_n": 1, "cas_n": 1, "we_n": 1, "a": 0}
        m.d.sync += [getattr(dfi, k).eq(v) for k, v in pins.items()]
        m.d.sync += [dfi.bg.eq(bg_of), dfi.ba.eq(ba_of)]
        with m.If(do_act):
            m.d.sync += [dfi.cs_n.eq(0), dfi.act_n.eq(0), dfi.ras_n.eq(row[16] if self.row_bits > 16 else 0),
                         dfi.cas_n.eq(row[15] if self.row_bits > 15 else 0),
                         dfi.we_n.eq(row[14] if self.row_bits > 14 else 0),
                         dfi.a.eq(row[:min(14, self.row_bits)] | (row[17:] << 17 if self.row_bits > 17 else 0))]
        with m.If(do_rd | do_wr):
            m.d.sync += [dfi.cs_n.eq(0), dfi.cas_n.eq(0), dfi.we_n.eq(do_rd), dfi.a.eq(col)]
        with m.If(do_pre | do_prea):
            m.d.sync += [dfi.cs_n.eq(0), dfi.ras_n.eq(0), dfi.we_n.eq(0), dfi.a.eq(do_prea << A10)]
        with m.If(do_ref):
            m.d.sync += [dfi.cs_n.eq(0), dfi.ras_n.eq(0), dfi.cas_n.eq(0)]

        # ---- timing: what each command loads ----------------------------------------
        for b in range(NB):
            this = cmd_bank == b
            closes = (do_pre & this) | (do_prea & bank_open[b])
            act_b[b].load(do_act & this, t.tRC)
            act_b[b].load(closes, t.tRP)
            cas_b[b].load(do_act & this, t.tRCD)
            pre_b[b].load(do_act & this, t.tRAS)
            pre_b[b].load(do_rd & this, t.tRTP)
            pre_b[b].load(do_wr & this, t.wr_to_pre)
        for i in range(NG):
            this = cmd_group == i
            act_g[i].load(do_act & this, t.tRRD_L)
            rd_g[i].load(do_rd & this, t.tCCD_L)
            rd_g[i].load(do_wr & this, t.wr_to_rd_l)
            wr_g[i].load(do_wr & this, t.tCCD_L)
        act_r.load(do_act, t.tRRD_S)
        act_r.load(do_ref, t.tRFC)
        rd_r.load(do_rd, t.tCCD_S)
        rd_r.load(do_wr, t.wr_to_rd_s)
        wr_r.load(do_wr, t.tCCD_S)
        wr_r.load(do_rd, t.rd_to_wr)
        ref_r.load(do_pre | do_prea, t.tRP)
        ref_r.load(do_ref, t.tRFC)
        for i in range(4):
            faw[i].load(do_act & (faw_ptr == i), t.tFAW)
        for c in countdowns:
            c.elaborate(m)
        with m.If(do_act):
            m.d.sync += faw_ptr.eq(faw_ptr + 1)

        # ---- bank state -------------------------------------------------------------
        with m.If(do_act):
            m.d.sync += [bank_open.bit_select(cmd_bank, 1).eq(1), bank_used.bit_select(cmd_bank, 1).eq(0),
                         bank_row[cmd_bank].eq(row)]
        with m.If(do_pre):
            m.d.sync += bank_open.bit_select(cmd_bank, 1).eq(0)
        with m.If(do_prea):
            m.d.sync += bank_open.eq(0)
        with m.If(do_rd | do_wr):
            m.d.sync += bank_used.bit_select(cmd_bank, 1).eq(1)
        m.d.sync += owed.eq(owed + (refi == t.tREFI - 1) - do_ref)

        # ---- the window: take a request, retire an entry on its column command ----------
        req = self.req.payload
        reads_open = Signal(range(D + 1))       # accepted, not yet taken on rsp
        write_free = Signal(WD, init=(1 << WD) - 1)     # write-data slots
        free_slot = Signal(range(WD))
        for i in reversed(range(WD)):
            with m.If(write_free[i]):
                m.d.comb += free_slot.eq(i)
        m.d.comb += self.req.ready.eq((count < W) & Mux(req.write, write_free.any(), reads_open < D))
        take = self.req.valid & self.req.ready
        retire = do_rd | do_wr
        next_tag = Signal(tag_bits)
        incoming = Signal(Entry)
        loc = req.loc
        m.d.comb += [incoming.burst.eq(loc.burst), incoming.row.eq(loc.row),
                     incoming.bank.eq(Cat(loc.ba, loc.bg)), incoming.write.eq(req.write),
                     incoming.tag.eq(Mux(req.write, free_slot, next_tag))]
        with m.If(take & ~req.write):
            m.d.sync += next_tag.eq(Mux(next_tag == D - 1, 0, next_tag + 1))
        tail = Mux(retire, count - 1, count)        # where the incoming request lands
        for i in range(W):
            nxt = win[i + 1] if i + 1 < W else win[i]
            with m.If(take & (tail == i)):
                m.d.sync += win[i].eq(incoming)
            with m.Elif(retire & (i >= cas_pick)):
                m.d.sync += win[i].eq(nxt)
        m.d.sync += [count.eq(count + take - retire),
                     writes_waiting.eq(writes_waiting + (take & req.write) - do_wr)]
        m.submodules.wmem = wmem = memory.Memory(shape=BURST_BITS, depth=WD, init=[])
        wmem_wr, wmem_rd = wmem.write_port(), wmem.read_port(domain="comb")
        m.d.comb += [wmem_wr.addr.eq(free_slot), wmem_wr.data.eq(req.data), wmem_wr.en.eq(take & req.write)]

        # ---- data: write bursts CWL clocks after their WR is on the pins; reads back in
        # issue order into the reorder buffer, out of it in request order ------------------
        wr_due = Signal(t.CWL + 1)
        m.d.sync += wr_due.eq(Cat(do_wr, wr_due[:-1]))
        m.submodules.write_slots = write_slots = fifo.SyncFIFO(width=tag_bits, depth=t.CWL // 4 + 2)
        m.d.comb += [write_slots.w_en.eq(do_wr), write_slots.w_data.eq(cas_entry.tag),
                     write_slots.r_en.eq(wr_due[t.CWL]), wmem_rd.addr.eq(write_slots.r_data),
                     dfi.wrdata_en.eq(wr_due[t.CWL]), dfi.wrdata.eq(wmem_rd.data)]
        taken_mask = Mux(take & req.write, C(1, WD) << free_slot, 0)
        sent_mask = Mux(wr_due[t.CWL], C(1, WD) << write_slots.r_data, 0)
        m.d.sync += write_free.eq((write_free & ~taken_mask) | sent_mask)
        m.submodules.tags = tags = fifo.SyncFIFO(width=tag_bits, depth=D)   # of the RDs in flight
        m.submodules.rob = rob = memory.Memory(shape=BURST_BITS, depth=D, init=[])
        rob_wr, rob_rd = rob.write_port(), rob.read_port(domain="comb")
        rob_full = Signal(D)                    # which slots hold a burst
        rob_head = Signal(tag_bits)             # the next read to leave, in request order
        m.d.comb += [tags.w_en.eq(do_rd), tags.w_data.eq(cas_entry.tag),
                     tags.r_en.eq(dfi.rddata_valid),
                     rob_wr.addr.eq(tags.r_data), rob_wr.data.eq(dfi.rddata), rob_wr.en.eq(dfi.rddata_valid),
                     rob_rd.addr.eq(rob_head)]
        leave = self.rsp.valid & self.rsp.ready
        m.d.comb += [self.rsp.valid.eq(rob_full.bit_select(rob_head, 1)), self.rsp.payload.eq(rob_rd.data)]
        arrive_mask = Mux(dfi.rddata_valid, C(1, D) << tags.r_data, 0)
        leave_mask = Mux(leave, C(1, D) << rob_head, 0)
        m.d.sync += rob_full.eq((rob_full | arrive_mask) & ~leave_mask)
        with m.If(leave):
            m.d.sync += rob_head.eq(Mux(rob_head == D - 1, 0, rob_head + 1))
        m.d.sync += reads_open.eq(reads_open + (take & ~req.write) - leave)

        m.d.comb += [self.idle.eq((count == 0) & (reads_open == 0) & write_free.all()),
                     self.all_closed.eq(~bank_open.any()), self.refreshed.eq(owed == 0)]
        s = self.stats
        m.d.sync += [s.acts.eq(s.acts + do_act), s.reads.eq(s.reads + do_rd),
                     s.writes.eq(s.writes + do_wr), s.refs.eq(s.refs + do_ref),
                     s.pres.eq(s.pres + do_pre + Mux(do_prea, _popcount(bank_open), 0)),
                     s.hits.eq(s.hits + (retire & bank_used.bit_select(cmd_bank, 1)))]
        return m


def _popcount(v):
    total = 0
    for i in range(len(v)):
        total = total + v[i]
    return total
