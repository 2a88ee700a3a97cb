"""The NMP engine, forward pass: batch check, parts, analysis, shared aggregation, outputs.

Job flow (one ``start`` pulse, configuration latched):

1. CHECK: the whole batch is read once and checked before anything is written: offsets
   start at 0, never decrease, end at ``num_indices``; no bag is longer than
   ``max_bag_len``; every index lies inside its table.  A failure sets ``error`` and the
   job ends with no memory write.
2. Per table, per part (DESIGN.md's partition rule): the part's offsets give the bag
   lengths and close the part on the bag and lookup limits; its lookups stream into the
   analyzer, which closes it on the distinct-row limit (see ``analyzer.py``).
3. The part's items stream into the sharing scheduler: in ``refree`` and ``dedup`` the
   analyzer's member lists (each distinct row once, in row order), in ``baseline`` the
   lookups again in index order (one row read per lookup).  Each item's row is fetched from
   its table while the scheduler's operations run in the fold datapath.
4. Each bag's result is written to the pooled output, ``(B, T*D)`` float32, row-major.

Memory layout: beat addresses (64 bytes); ``offsets`` and ``indices`` are int64 arrays
from a beat boundary; table ``t`` row ``r`` starts at ``base[t] + r * stride[t]``; the
pooled output's bag ``b`` of table ``t`` is at ``pooled + (b*T + t) * D/16``.

Scope of this version: forward pass, sum pooling, unweighted bags.  Mean pooling,
weights, backward and the optimizer update are the next steps (see the issue notes).
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from refree.golden.errors import ErrorCode
from .analyzer import Analyzer
from .datapath import FoldDatapath
from .memport import ArrayReader, MemArbiter, RowFetcher, mem_port
from .params import EngineParams
from .scheduler import ShareScheduler

__all__ = ["Engine", "MODE_BASELINE", "MODE_DEDUP", "MODE_REFREE"]

MODE_BASELINE, MODE_DEDUP, MODE_REFREE = 0, 1, 2
ONE_F32 = 0x3F800000


def small_int_to_f32(m, n, width):
    """binary32 bit pattern of the unsigned integer n (exact for width <= 24)."""
    out = Signal(32)
    for e in range(width):
        with m.If(n[e]):
            mant = (n << (23 - e))[:23] if e <= 23 else (n >> (e - 23))[:23]
            m.d.comb += out.eq(Cat(mant, C((127 + e) & 0xFF, 8), C(0, 1)))
    return out


class Engine(wiring.Component):
    """The engine (forward pass; see the module docstring).

    Parameters
    ----------
    params : EngineParams
    dim : int               vector length D (a multiple of 16)
    max_tables : int
    addr_bits : int         beat address width of the memory port

    Members
    -------
    start : In(1); config : In(Config)
    busy : Out(1); error : Out(ErrorCode width)
    counters : Out(Counters)
    mem : Out(mem_port(addr_bits))
    """

    def __init__(self, params, dim=64, max_tables=4, addr_bits=32):
        if not isinstance(params, EngineParams):
            raise TypeError(f"Engine params must be an EngineParams, not {params!r}")
        if not isinstance(dim, int) or dim < 16 or dim % 16:
            raise ValueError(f"Engine dim must be a positive multiple of 16, not {dim!r}")
        self.params, self.dim, self.max_tables, self.addr_bits = params, dim, max_tables, addr_bits
        self.beats = dim // 16
        p = params
        self.Table = data.StructLayout({"base": addr_bits, "rows": p.index_width + 1, "stride": 16})
        self.Config = data.StructLayout({
            "mode": 2, "batch_size": 32, "num_tables": max(1, max_tables.bit_length()),
            "num_indices": 32, "offsets_addr": addr_bits, "indices_addr": addr_bits,
            "pooled_addr": addr_bits, "tables": data.ArrayLayout(self.Table, max_tables)})
        self.Counters = data.StructLayout({
            "cycles": 48, "row_reads": 32, "staging_reads": 32, "pooled_writes": 32,
            "adds": 32, "muls": 32, "distinct_rows": 32, "parts": 32})
        super().__init__({
            "start": In(1), "config": In(self.Config),
            "busy": Out(1), "error": Out(8), "counters": Out(self.Counters),
            "mem": Out(mem_port(addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        p, A = self.params, self.addr_bits
        cfg = Signal(self.Config)
        cnt = self.counters

        m.submodules.arb = arb = MemArbiter(4, A)
        wiring.connect(m, arb.mem, wiring.flipped(self.mem))
        writer = arb.port0
        m.submodules.fetch = fetch = RowFetcher(A, self.beats)
        m.submodules.offs = offs = ArrayReader(A)
        m.submodules.idx = idxr = ArrayReader(A)
        wiring.connect(m, fetch.port, arb.port1)
        wiring.connect(m, offs.port, arb.port2)
        wiring.connect(m, idxr.port, arb.port3)
        m.submodules.analyzer = an = Analyzer(p)
        m.submodules.scheduler = sch = ShareScheduler(num_members=p.max_bags,
                                                      item_bits=max(p.slot_bits, p.pair_bits),
                                                      repeat_bits=p.mult_bits)
        m.submodules.datapath = dp = FoldDatapath(dim=self.dim, num_classes=sch.num_classes,
                                                  node_bits=sch.node_bits,
                                                  item_bits=max(p.slot_bits, p.pair_bits))
        wiring.connect(m, sch.finals, dp.finals)
        # The scheduler's operations go to the datapath; counted on the way.
        wiring.connect(m, sch.ops, dp.ops)
        wiring.connect(m, fetch.beats_out, dp.rows)

        # Items and row addresses are forked through small FIFOs (no combinational loop
        # between the scheduler's and the fetcher's handshakes).
        m.submodules.item_q = item_q = fifo.SyncFIFOBuffered(width=sch.Item.size, depth=4)
        m.submodules.row_q = row_q = fifo.SyncFIFOBuffered(width=A, depth=4)
        m.d.comb += [sch.items.valid.eq(item_q.r_rdy), sch.items.payload.eq(item_q.r_data),
                     item_q.r_en.eq(sch.items.ready),
                     fetch.rows.valid.eq(row_q.r_rdy), fetch.rows.payload.eq(row_q.r_data),
                     row_q.r_en.eq(fetch.rows.ready)]
        item = Signal(sch.Item)
        item_valid, item_needs_row = Signal(), Signal()
        item_row = Signal(p.index_width)
        item_taken = item_valid & item_q.w_rdy & (~item_needs_row | row_q.w_rdy)
        m.d.comb += [item_q.w_data.eq(item), item_q.w_en.eq(item_taken),
                     row_q.w_en.eq(item_taken & item_needs_row)]

        # ---- configuration-derived state ---------------------------------------------
        T, B = cfg.num_tables, cfg.batch_size
        t = Signal(range(self.max_tables + 2))
        tb = Signal(48)                         # t * B
        b0 = Signal(32)                         # first bag of the part
        table = cfg.tables[t]
        m.d.comb += [row_q.w_data.eq(table.base + item_row * table.stride)]
        bound = Signal(data.ArrayLayout(32, self.max_tables + 1))  # offsets[t*B]
        out_addr = Signal(A)                    # pooled address of the next result bag

        # ---- bag lengths of the current part ------------------------------------------
        m.submodules.bag_len = bl_mem = memory.Memory(shape=p.mult_bits, depth=p.max_bags, init=[])
        bl_wr = bl_mem.write_port()
        bl_rd = bl_mem.read_port(transparent_for=(bl_wr,))
        nb = Signal(range(p.max_bags + 1))      # bags of the part (candidate, then final)
        part_lo = Signal(32)                    # index of the part's first lookup
        lookups = Signal(32)
        prev = Signal(64)
        k = Signal(48)
        closed = Signal()

        # ---- walking the part's lookups with their bag labels ---------------------------
        bi = Signal(range(p.max_bags + 1))      # bag of the next lookup
        rem = Signal(p.mult_bits + 1)           # lookups left in bag bi
        len_state = Signal(2)                   # 0: bag_len[bi] addressed, 1: readable, 2: loaded
        bag_too_long = Signal()
        m.d.comb += bl_rd.addr.eq(bi)

        error = Signal(8)
        m.d.comb += [self.error.eq(error)]
        m.d.sync += cnt.cycles.eq(cnt.cycles + self.busy)
        m.d.comb += self.busy.eq(1)
        # Counters tapped at the handshakes.
        with m.If(fetch.rows.valid & fetch.rows.ready):
            m.d.sync += cnt.row_reads.eq(cnt.row_reads + 1)
        for r in (offs, idxr):
            with m.If(r.port.cmd.valid & r.port.cmd.ready):
                m.d.sync += cnt.staging_reads.eq(cnt.staging_reads + 1)
        with m.If(sch.ops.valid & sch.ops.ready):
            m.d.sync += [cnt.adds.eq(cnt.adds + ~sch.ops.payload.src_zero),
                         cnt.muls.eq(cnt.muls + (sch.ops.payload.c != ONE_F32))]
        with m.If(writer.cmd.valid & writer.cmd.ready):
            m.d.sync += cnt.pooled_writes.eq(cnt.pooled_writes + 1)

        # Results are written as they come: bag b of table t at pooled + (b*T + t) * D/16.
        beat_off = dp.results.payload.beat
        m.d.comb += [writer.cmd.valid.eq(dp.results.valid), writer.cmd.payload.write.eq(1),
                     writer.cmd.payload.addr.eq(out_addr + beat_off),
                     writer.cmd.payload.data.eq(dp.results.payload.data),
                     dp.results.ready.eq(writer.cmd.ready)]
        with m.If(dp.results.valid & dp.results.ready & dp.results.payload.last):
            m.d.sync += out_addr.eq(out_addr + T * self.beats)

        # In baseline the analyzer only decides the parts; its member lists are dropped.
        m.d.comb += an.members.ready.eq(cfg.mode == MODE_BASELINE)

        def lookup_walker(source_valid, on_lookup):
            """Label the lookups of the part with their bag (skipping empty bags)."""
            with m.If(len_state == 0):
                m.d.sync += len_state.eq(1)
            with m.Elif(len_state == 1):
                m.d.sync += [rem.eq(bl_rd.data), len_state.eq(2)]
            with m.Elif(rem == 0):
                m.d.sync += [bi.eq(bi + 1), len_state.eq(0)]
            with m.Elif(source_valid):
                on_lookup()

        with m.FSM(name="engine"):
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [cfg.eq(self.config), error.eq(0), cnt.eq(0), k.eq(0), t.eq(0), tb.eq(0),
                                 bag_too_long.eq(0)]
                    m.d.comb += [offs.start.eq(1), offs.base.eq(self.config.offsets_addr), offs.first.eq(0),
                                 offs.count.eq(self.config.num_tables * self.config.batch_size + 1)]
                    m.next = "CHECK_OFFSETS"

            # ---- 1. check the batch ---------------------------------------------------
            with m.State("CHECK_OFFSETS"):
                v = offs.data.payload
                m.d.comb += offs.data.ready.eq(1)
                with m.If(offs.data.valid):
                    m.d.sync += [prev.eq(v), k.eq(k + 1)]
                    with m.If(k == tb):         # the first offset of table t
                        m.d.sync += [bound[t].eq(v), t.eq(t + 1), tb.eq(tb + B)]
                    with m.If((k == 0) & (v != 0)):
                        m.d.sync += error.eq(ErrorCode.MALFORMED_OFFSETS)
                    with m.If((k != 0) & (v.as_signed() < prev.as_signed())):
                        m.d.sync += error.eq(ErrorCode.MALFORMED_OFFSETS)
                    with m.Elif((k != 0) & (v - prev > p.max_bag_len)):
                        m.d.sync += bag_too_long.eq(1)
                    with m.If((k == T * B) & (v != cfg.num_indices)):
                        m.d.sync += error.eq(ErrorCode.MALFORMED_OFFSETS)
                # The golden model's order of checks: malformed offsets, then indices out of
                # range, then bags too long.
                with m.If(~offs.busy):
                    m.d.sync += [t.eq(0), k.eq(0)]
                    with m.If(error == 0):
                        m.d.comb += [idxr.start.eq(1), idxr.base.eq(cfg.indices_addr), idxr.first.eq(0),
                                     idxr.count.eq(cfg.num_indices)]
                        m.next = "CHECK_INDICES"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("CHECK_INDICES"):
                v = idxr.data.payload
                with m.If((t < T) & (k >= bound[t + 1])):   # index k belongs to a later table
                    m.d.sync += t.eq(t + 1)
                with m.Else():
                    m.d.comb += idxr.data.ready.eq(1)
                    with m.If(idxr.data.valid):
                        m.d.sync += k.eq(k + 1)
                        with m.If(v >= table.rows):         # unsigned: negative is huge
                            m.d.sync += error.eq(ErrorCode.INDEX_OUT_OF_RANGE)
                with m.If(~idxr.busy):
                    m.d.sync += [t.eq(0), tb.eq(0), b0.eq(0), out_addr.eq(cfg.pooled_addr)]
                    with m.If((error == 0) & bag_too_long):
                        m.d.sync += error.eq(ErrorCode.BAG_TOO_LONG)
                        m.next = "IDLE"
                    with m.Elif(error == 0):
                        m.next = "PART_START"
                    with m.Else():
                        m.next = "IDLE"

            # ---- 2. form a part -----------------------------------------------------------
            with m.State("PART_START"):
                with m.If(t == T):
                    m.next = "IDLE"
                with m.Elif(b0 == B):           # next table
                    m.d.sync += [t.eq(t + 1), tb.eq(tb + B), b0.eq(0),
                                 out_addr.eq(cfg.pooled_addr + (t + 1) * self.beats)]
                with m.Else():
                    left = B - b0
                    m.d.comb += [offs.start.eq(1), offs.base.eq(cfg.offsets_addr), offs.first.eq(tb + b0),
                                 offs.count.eq(Mux(left > p.max_bags, p.max_bags, left) + 1)]
                    m.d.sync += [k.eq(0), nb.eq(0), lookups.eq(0), closed.eq(0)]
                    m.next = "PART_OFFSETS"

            with m.State("PART_OFFSETS"):       # bag lengths; close on the bag/lookup limits
                v = offs.data.payload
                m.d.comb += offs.data.ready.eq(1)
                length = (v - prev)[:p.mult_bits]
                with m.If(offs.data.valid):
                    m.d.sync += [prev.eq(v), k.eq(k + 1)]
                    with m.If(k == 0):
                        m.d.sync += part_lo.eq(v)
                    with m.Elif(~closed & (lookups + length <= p.max_lookups)):
                        m.d.comb += [bl_wr.addr.eq(nb), bl_wr.data.eq(length), bl_wr.en.eq(1)]
                        m.d.sync += [nb.eq(nb + 1), lookups.eq(lookups + length)]
                    with m.Else():
                        m.d.sync += closed.eq(1)
                with m.If(~offs.busy):
                    m.d.comb += [an.start.eq(1), idxr.start.eq(1), idxr.base.eq(cfg.indices_addr),
                                 idxr.first.eq(part_lo), idxr.count.eq(lookups)]
                    m.d.sync += [bi.eq(0), len_state.eq(0)]
                    m.next = "PART_ANALYZE"

            with m.State("PART_ANALYZE"):       # lookups into the analyzer
                m.d.comb += [an.lookups.payload.row.eq(idxr.data.payload), an.lookups.payload.bag.eq(bi)]

                def feed():
                    m.d.comb += [an.lookups.valid.eq(1), idxr.data.ready.eq(an.lookups.ready)]
                    with m.If(an.lookups.ready):
                        m.d.sync += rem.eq(rem - 1)
                with m.If(idxr.busy):
                    lookup_walker(idxr.data.valid, feed)
                with m.Else():
                    m.d.comb += an.finish.eq(1)
                    m.next = "PART_WAIT_ANALYZER"

            with m.State("PART_WAIT_ANALYZER"):
                with m.If(an.inserted):
                    with m.If(an.full):
                        m.d.sync += nb.eq(an.full_bag)
                    m.d.comb += [sch.start.eq(1), sch.share.eq(cfg.mode == MODE_REFREE),
                                 sch.num_members.eq(Mux(an.full, an.full_bag, nb)), dp.start.eq(1)]
                    with m.If(cfg.mode == MODE_BASELINE):
                        m.d.comb += [idxr.start.eq(1), idxr.base.eq(cfg.indices_addr), idxr.first.eq(part_lo),
                                     idxr.count.eq(an.num_lookups)]
                        m.d.sync += [bi.eq(0), len_state.eq(0), k.eq(0)]
                        m.next = "RUN_BASELINE"
                    with m.Else():
                        m.next = "RUN_MEMBERS"

            # ---- 3. items into the scheduler, rows into the datapath --------------------
            with m.State("RUN_MEMBERS"):
                mem_ = an.members.payload
                c_mult = small_int_to_f32(m, mem_.mult, p.mult_bits)
                m.d.comb += [item_valid.eq(an.members.valid), item_needs_row.eq(mem_.first),
                             item_row.eq(mem_.row), an.members.ready.eq(item_taken),
                             item.item.eq(mem_.slot), item.member.eq(mem_.bag), item.first.eq(mem_.first),
                             item.kind.eq(0)]
                with m.If(cfg.mode == MODE_REFREE):
                    m.d.comb += [item.c.eq(c_mult), item.repeat.eq(1)]
                with m.Else():
                    m.d.comb += [item.c.eq(ONE_F32), item.repeat.eq(mem_.mult)]
                with m.If(~an.busy & (item_q.level == 0)):
                    m.d.comb += sch.end.eq(1)
                    m.d.sync += cnt.distinct_rows.eq(cnt.distinct_rows + an.num_rows)
                    m.next = "PART_FINISH"

            with m.State("RUN_BASELINE"):       # every lookup is an item with its own row read
                def item_out():
                    m.d.comb += [item_valid.eq(1), item_needs_row.eq(1), item_row.eq(idxr.data.payload),
                                 idxr.data.ready.eq(item_taken),
                                 item.item.eq(k), item.member.eq(bi), item.first.eq(1), item.kind.eq(0),
                                 item.c.eq(ONE_F32), item.repeat.eq(1)]
                    with m.If(item_taken):
                        m.d.sync += [rem.eq(rem - 1), k.eq(k + 1)]
                with m.If(idxr.busy):
                    lookup_walker(idxr.data.valid, item_out)
                with m.Elif(item_q.level == 0):
                    m.d.comb += sch.end.eq(1)
                    m.d.sync += cnt.distinct_rows.eq(cnt.distinct_rows + an.num_rows)
                    m.next = "PART_FINISH"

            with m.State("PART_FINISH"):        # the scheduler's finals drain through the datapath
                with m.If(~sch.busy & ~dp.busy & ~an.busy):
                    m.d.sync += [b0.eq(b0 + nb), cnt.parts.eq(cnt.parts + 1)]
                    m.next = "PART_START"
        return m
