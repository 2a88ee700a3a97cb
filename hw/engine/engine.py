"""The NMP engine: batch check, parts, analysis, shared aggregation, outputs, update.

Two jobs, chosen by ``config.job`` (the host needs every pooled output before it can
compute the upstream gradients, so a training step is a forward job, then a backward job):

* ``JOB_FORWARD``: pooled outputs of every bag, written to the staging area;
* ``JOB_BACKWARD``: the upstream gradient rows are read from the staging area, merged per
  distinct row (``dedup``, ``refree``) and each table row is updated in place, by SGD or
  (``config.optimizer``) row-wise Adagrad with its state in its own array per table
  (``baseline``: SGD only, one read-modify-write per lookup, in index order).

Job flow (one ``start`` pulse, configuration latched):

0. CHECK_CONFIG (:mod:`.memory_map_check`; nothing read yet): every table's rows lie in
   memory and do not overlap each other (a stride of at least D/16 beats, no two
   descriptors sharing a beat), and no staging array the job reads or writes (offsets,
   indices, weights; the pooled output in forward, the upstream gradient in backward) runs
   past memory or shares a beat with a table; else ``ACCESS_OUTSIDE_TABLES``.  One (table,
   region) pair per cycle, for the batch's T tables: T * (max_tables + 4) cycles.
   With a stale set (Slipstream, :mod:`.stale_set`), a backward job with a list
   (``stale_count`` > 0) then loads it (STALE_LOAD: the set cleared, a set a cycle, then an
   entry a cycle from the index reader; a pair whose set is full is ``STALE_SET_FULL``);
   the set stays from job to job until the next load.  With ``stale_use``, the job's passes
   (by rows) and its replay (``baseline``) pass over every lookup of a stale row, as the
   golden step's ``stale`` does.
1. CHECK (:mod:`.batch_checker`, beside step 2): the whole batch is read and checked
   before anything is written: offsets start at 0, never decrease, end at
   ``num_indices``; no bag is longer than ``max_bag_len``; weights come only with tables
   that pool by sum; every index lies inside its table.  Parts are formed and analysed
   meanwhile (they only read); the job's first part takes its indices from the checker as
   it reads them (``share``: the input is read once for a batch of one part; not when the
   backward job begins with dry passes); the first part waits for the verdict before its
   first write (forward: before its first item streams; backward by rows: its merge runs
   beside the analysis, and its results, the finals, come after the verdict; ``baseline``:
   its lookups stream beside the analysis, and the write gate holds its writes until the
   verdict).  A failure sets ``error``, the analysis (and a merge begun: ``MERGE_DRAIN``;
   ``baseline``'s stream runs out) is dropped and the job ends with no memory write; the
   write gate drops every write while ``error`` is set.
2. Per table, per part (docs/design.md's partition rule): the part's offsets give the bag
   lengths and close the part on the bag and lookup limits; its lookups stream into the
   analyzer, which closes it on the distinct-row limit (see ``analyzer.py``).  The backward
   job of ``dedup`` and ``refree`` runs by rows instead (docs/design.md section 2): per
   table, a pass per row group (row r in group ``row_group(r)``, the XOR of its
   ``groups``-bit digits, ``G = 2**groups`` of the table's
   descriptor, the host's choice), each pass walking every bag of the table in chunks
   formed as parts are (bags and lookups; the analyzer's distinct rows and the merge go on
   over a pass's chunks, the merge beside the analysis, each bag's pairs as soon as the
   bag is complete); only the group's lookups enter the analyzer (a run of other groups'
   lookups is passed over a beat at a time); a group of more than ``max_distinct_rows``
   distinct rows is ``ROW_GROUP_TOO_LARGE``.  Every group is first checked by a pass that
   only analyses (a dry pass, no output), but table 0's first when its pass is one chunk
   (B <= max_bags, the batch's lookups <= max_lookups): it checks itself before anything
   is written; so a refused step writes nothing.  A chunk after a pass's first waits for the batch check's
   verdict (its offsets must be sound).  In ``dedup`` and ``refree`` each
   distinct row is fetched as the analyzer discovers it, in slot order, into the row store
   (:mod:`.row_store`), once no rollback can remove its slot; the rows of a bag rolled
   back are never read.
3. Forward: the part's items stream into the sharing scheduler: in ``refree`` and ``dedup``
   the analyzer's member lists (each distinct row once, in row order), in ``baseline`` the
   lookups again, from the lookup buffer (:mod:`.lookup_buffer`, written as they pass
   into the analyzer, so the indices are read once), from the part's start: the buffer
   gives a bag once the analyzer keeps it (``bags_kept``), so the rows stream while the
   part is analysed; with 16 bags interleaved, each bag
   in index order (one row read per lookup; no bag's chain through the FMA pipeline holds
   up the others).  Each item's row is read from
   the row store by slot (``baseline``: fetched from its table, in item order) while the
   scheduler's operations run in the fold datapath (``fold_lanes`` lanes: an operation of
   D floats in ``D / fold_lanes`` cycles; :mod:`.result_splitter` makes memory beats of its
   wide result beats).  Each bag's result
   is written to the pooled output, ``(B, T*D)`` float32 (laid out by :mod:`.staging`), as soon as the bag is
   complete (the analyzer marks each bag's last pair), so the writes run under the fold.
   Backward (``dedup``, ``refree``): the items are the group's gradient rows in bag order,
   the members its distinct rows; the scheduler's results are the merged gradients,
   which the row updater applies to the table rows and writes back.  The table rows
   are in the row store (fetched during the analysis, see step 2).  With SGD (the analyzer
   sends no update list) the gradient rows have priority on the memory port, and the merged
   gradients, after the group's last chunk (and the batch check's verdict), in slot order,
   each meet their row there, read by slot, and the updated row goes back.
   Row-wise Adagrad takes the update list last and the merged gradients in slot order (rows
   sharing a state beat wait for each other's updates, which need the merged gradients);
   each update reads its row from the store and its state beat from memory.
   Backward ``baseline``: per lookup in index order (replayed from the lookup buffer,
   from the part's start), the gradient row of its bag and the table row go through the
   updater; a row still being updated (a small table of rows in
   flight) is read, but its value is taken from that update (the row forwarder), so
   repeated rows see each other's updates in order.

On-chip queues that let memory run ahead of the fold (sizes from the part limits, at the
defaults ``max_distinct_rows`` = 1,024 and D = 64): the row store, a part's distinct rows
(``max_distinct_rows * D/16`` beats of 512 bits: 256 KiB, and a write-back address per
row), the queue of row addresses to fetch (``max_distinct_rows`` addresses),
``ITEMS_AHEAD`` (128) scheduler items and as many slots of rows to read from the store
(forward; Adagrad's backward), a 32-beat queue of the datapath's results and a ``2 * WRITE_BURST``-beat write
queue (4 KiB); ``baseline``'s backward: the row forwarder's value store,
``IN_FLIGHT_ROWS * D/16`` beats (8 KiB).

Weighted bags (``config.weighted``): the float32 weights, one per index, are read beside the
indices.  ``refree`` folds each (bag, row) pair's weights into its key coefficient in the
analyzer; ``dedup`` makes every lookup a pair of its own, so each occurrence applies its own
weight (forward ``fma(w, E, acc)``, backward the two-rounding ``fl(fl(w*G) + g)``);
``baseline`` applies each lookup's weight as it streams (forward ``fma(w, E, acc)``,
backward the update's scale).

Memory layout: beat addresses (64 bytes); ``offsets`` and ``indices`` are int64 arrays, or
int32 ones (``offsets_int32``, ``indices_int32``: half the input beats; each sign-extended as
it is read), from a beat boundary, ``weights`` a float32 array from a beat boundary; table ``t`` row ``r`` starts at ``base[t] + r * stride[t]``; the
pooled output's (and the upstream gradient's) bag ``b`` of table ``t`` is staging row
``b*T + t`` of the array at ``pooled`` (``grad``), laid out by :mod:`.staging` (row-major,
or striped over the ranks).

The backward job of ``baseline`` re-forms the parts exactly as the forward job (same rule,
same batch); a part's (a row group's) updates are complete before the next one reads a
row.

Row-wise Adagrad: the state of table ``t`` row ``r`` is lane ``r % 16`` of beat
``state[t] + r // 16``.  Each distinct row's update reads that beat and writes it back with
the new state (:mod:`.adagrad`); a row whose state beat is still being updated waits (the
rows-in-flight table, keyed by state beat), unless that beat is the previous update's: the
Adagrad unit then takes the other lanes from the previous row's output beat (``chained``).
Backward by rows updates each distinct row once per batch, so Adagrad takes batches of any
size (within the row groups' limits).  Adagrad in ``baseline`` mode is
``ADAGRAD_IN_BASELINE``.
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from refree.golden.errors import MAX_ROW_GROUP_BITS, ErrorCode
from ..fp.common import f32_bits
from .adagrad import AdagradUnit
from .analyzer import Analyzer
from .batch_checker import BatchChecker
from .beat_packer import BeatPacker
from .datapath import FoldDatapath, lanes_for
from .coef import CoefStage
from .forwarder import RowForwarder
from .inflight import RowsInFlight
from .lookup_buffer import LookupBuffer
from .memory_map_check import MemoryMapCheck
from .memport import ArrayReader, MemArbiter, RowFetcher, mem_port
from .result_splitter import ResultSplitter
from .row_store import RowStore
from .rowdiv import RowDivider
from .params import EngineParams, counter_signal
from .scheduler import ShareScheduler
from .stale_set import ENTRY_TABLE_SHIFT, StaleSet, StaleSetParams, table_bits
from .staging import check_stripe, staging_beat
from .updater import RowUpdater

__all__ = ["Engine", "MODE_BASELINE", "MODE_DEDUP", "MODE_REFREE", "JOB_FORWARD", "JOB_BACKWARD"]

MODE_BASELINE, MODE_DEDUP, MODE_REFREE = 0, 1, 2
JOB_FORWARD, JOB_BACKWARD = 0, 1
# Baseline backward: rows fetched and not yet written back (Adagrad: state beats).  Every
# lookup's update is a round trip through the DRAM side (~100 clocks under load), so 8 in
# flight would cap baseline's backward near ~12 clocks a lookup, the memory bound at R = 4
# (32 raised with the fetchers' reads in flight; not measured apart; a comparator each).
IN_FLIGHT_ROWS = 32
# Items queued ahead of the scheduler: their rows are fetched as they are queued, so this
# many items of run-ahead hide the memory's latency behind the scheduler's work.
ITEMS_AHEAD = 128
# Beats of table rows (and of gradient rows) in flight to memory: what the fetchers stream
# is at most this many beats per round trip through the DRAM side (Little's law).  16 held
# `baseline` at R = 2 and 4 to ~11.5 clocks a row (a round trip of ~46 clocks); 64 covers a
# round trip of 64 clocks at 4 ranks' peak of a beat a clock; 128 (random rows wait for
# their banks longer) measured at R = 4, B = 128: `baseline` forward MovieLens 14,437 ->
# 14,013 cycles, Meta 20,181 -> 18,647; `dedup`, `refree` unchanged (their reads follow the
# analysis).  Cost: a response buffer of this many 64-byte beats for each of the two
# fetchers (16 KiB).
ROW_READS_AHEAD = 128
# Backward (SGD, by slot): row beats asked of the row store ahead of the updater's step, at
# least the places of its scaling FMA bank's queue (credits.queue_depth) so that the store
# reads at a beat a cycle.
UPDATE_WANTS = 32
# Forward results and backward (SGD) updated rows wait in a write queue and go to memory in
# bursts of this many beats (or at the end of a part): every switch between reads and
# writes costs the DRAM bus a turnaround, and the stream reads rows throughout.
WRITE_BURST = 32
ONE_F32 = 0x3F800000
# A table descriptor's ``groups``: log2 of its row groups in backward by rows (0 .. 15).
GROUP_BITS_WIDTH = MAX_ROW_GROUP_BITS.bit_length()


def row_group(m, row, bits):
    """The row group of ``row`` among ``2**bits`` (``bits`` a signal, 0 to
    MAX_ROW_GROUP_BITS): the XOR of its ``bits``-wide digits, as ``row_group_of`` of
    golden/planner.py."""
    out = Signal(MAX_ROW_GROUP_BITS)
    for b in range(1, MAX_ROW_GROUP_BITS + 1):
        digits = [row[k:k + b] for k in range(0, len(row), b)]
        fold = digits[0]
        for d in digits[1:]:
            fold = fold ^ d
        with m.If(bits == b):
            m.d.comb += out.eq(fold)
    return out


def small_int_to_f32(m, n, width):
    """binary32 bit pattern of the unsigned integer n (exact for width <= 24)."""
    out = Signal(32)
    for e in range(width):
        with m.If(n[e]):
            mant = (n << (23 - e))[:23] if e <= 23 else (n >> (e - 23))[:23]
            m.d.comb += out.eq(Cat(mant, C((127 + e) & 0xFF, 8), C(0, 1)))
    return out


class Engine(wiring.Component):
    """The engine (see the module docstring).

    Parameters
    ----------
    params : EngineParams
    dim : int               vector length D (a multiple of 16)
    max_tables : int
    addr_bits : int         beat address width of the memory port
    staging_stripe : int    the layout of the pooled output and the upstream gradient
                            (:mod:`.staging`; 1: row-major)
    stale : StaleSetParams  Slipstream's stale set (:mod:`.stale_set`; default none): with
                            one, ``Config`` has ``stale_addr`` and ``stale_count`` (the list a
                            backward job loads; 0: the set is kept as it is) and
                            ``stale_use`` (a backward job passes over the set's rows), and
                            ``Counters`` ``stale_skipped`` (lookups), ``stale_rows_skipped``
                            (rows: the updates skipped) and ``stale_load_cycles``

    Members
    -------
    start : In(1); config : In(Config)
    busy : Out(1); error : Out(ErrorCode width)
    counters : Out(Counters)    cleared at ``start``; memory traffic in 64-byte beats
    mem : Out(mem_port(addr_bits))
    """

    def __init__(self, params, dim=64, max_tables=4, addr_bits=32, div_lanes=4, adagrad_lanes=4,
                 fold_lanes=16, staging_stripe=1, stale=StaleSetParams()):
        if not isinstance(params, EngineParams):
            raise TypeError(f"Engine params must be an EngineParams, not {params!r}")
        if not isinstance(dim, int) or dim < 16 or dim % 16:
            raise ValueError(f"Engine dim must be a positive multiple of 16, not {dim!r}")
        self.params, self.dim, self.max_tables, self.addr_bits = params, dim, max_tables, addr_bits
        self.div_lanes, self.adagrad_lanes = div_lanes, adagrad_lanes
        check_stripe(staging_stripe)
        self.staging_stripe = staging_stripe
        self.fold_lanes = lanes_for(dim, fold_lanes)     # (fewer when they do not divide D)
        self.beats = dim // 16
        p = params
        if not isinstance(stale, StaleSetParams):
            raise TypeError(f"Engine stale must be a StaleSetParams, not {stale!r}")
        if stale.enabled and (p.index_width > ENTRY_TABLE_SHIFT or max_tables > 256):
            raise ValueError(f"a stale set's list holds rows of at most {ENTRY_TABLE_SHIFT} bits and 256 "
                             f"tables, not index_width {p.index_width}, max_tables {max_tables}")
        self.stale = stale
        stale_fields = {"stale_addr": addr_bits, "stale_count": 32, "stale_use": 1} if stale.enabled else {}
        self.Table = data.StructLayout({"base": addr_bits, "rows": p.index_width + 1, "stride": 16,
                                        "mean": 1, "state": addr_bits, "groups": GROUP_BITS_WIDTH})
        self.Config = data.StructLayout({
            "job": 1, "mode": 2, "batch_size": 32, "num_tables": max(1, max_tables.bit_length()),
            "num_indices": 32, "offsets_addr": addr_bits, "indices_addr": addr_bits,
            "offsets_int32": 1, "indices_int32": 1,
            "weighted": 1, "weights_addr": addr_bits,
            "pooled_addr": addr_bits, "grad_addr": addr_bits, "lr": 32,
            "optimizer": 1, "eps": 32,
            "tables": data.ArrayLayout(self.Table, max_tables), **stale_fields})
        self.Counters = data.StructLayout({
            "cycles": 48, "cycles_check": 48, "cycles_analysis": 48, "cycles_stream": 48,
            "cycles_drain": 48,
            "input_reads": 32, "table_reads": 32, "table_writes": 32, "grad_reads": 32,
            "state_reads": 32, "state_writes": 32,
            "pooled_writes": 32, "adds": 32, "muls": 32, "distinct_rows": 32, "parts": 32,
            **({"stale_skipped": 32, "stale_rows_skipped": 32, "stale_load_cycles": 32} if stale.enabled else {})})
        super().__init__({
            "start": In(1), "config": In(self.Config),
            "busy": Out(1), "error": Out(8), "counters": Out(self.Counters),
            "mem": Out(mem_port(addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        p, A, beats = self.params, self.addr_bits, self.beats
        cfg = Signal(self.Config)
        cnt = self.counters
        forward = cfg.job == JOB_FORWARD
        baseline = cfg.mode == MODE_BASELINE

        # (the table-row and gradient-row fetchers stream at the ranks' peak: they may have
        # ROW_READS_AHEAD beats in flight; the input readers and the state fetcher 16; port 0,
        # the writer, reads nothing)
        m.submodules.arb = arb = MemArbiter(9, A, max_outstanding=[1, ROW_READS_AHEAD] + [16] * 5
                                            + [ROW_READS_AHEAD, 16])
        wiring.connect(m, arb.mem, wiring.flipped(self.mem))
        writer = mem_port(A).create(path=("writer",))     # (to arb.port0 past the write gate, below)
        m.submodules.fetch_rows = fetch = RowFetcher(A, beats)       # table rows
        m.submodules.fetch_grads = fetch_g = RowFetcher(A, beats, self.staging_stripe)  # upstream gradient rows
        m.submodules.offs = offs = ArrayReader(A)
        m.submodules.idx = idxr = ArrayReader(A)
        m.submodules.weights = wts = ArrayReader(A, elem_bits=32)
        # Priorities (port 0 first): gradient rows before the input and table rows: in
        # backward the merge waits for the gradient rows, while the table rows are fetched
        # ahead into the row store; the input (the part's and the batch check's) before
        # table rows, which are fetched as the analysis discovers them: the first item
        # waits for the check's verdict, and the analysis for its lookups.
        # The whole batch is checked beside the first part's analysis (no write before its
        # verdict), on its own readers.
        m.submodules.checker = check = BatchChecker(p, self.Config, self.max_tables, A)
        m.submodules.fetch_state = fetch_s = RowFetcher(A, 1)      # Adagrad state beats
        for k, port in enumerate([fetch_g.port, offs.port, idxr.port, wts.port, check.offsets_port,
                                  check.indices_port, fetch.port, fetch_s.port], start=1):
            wiring.connect(m, port, getattr(arb, f"port{k}"))
        m.d.comb += check.config.eq(cfg)
        item_bits = max(p.slot_bits, p.pair_bits, p.bag_bits)
        m.submodules.analyzer = an = Analyzer(p)
        # baseline: the part's lookups, kept as they pass into the analyzer and replayed
        # (forward: bags interleaved, so that no bag's chain holds up the fold)
        m.submodules.lookups = lbuf = LookupBuffer(p)
        # members: bags (forward) or distinct rows (backward)
        m.submodules.scheduler = sch = ShareScheduler(num_members=max(p.max_bags, p.max_distinct_rows),
                                                      item_bits=item_bits, repeat_bits=p.mult_bits)
        m.submodules.datapath = dp = FoldDatapath.for_scheduler(sch, self.dim, lanes=self.fold_lanes)
        m.submodules.updater = upd = RowUpdater()
        # Results leave the datapath through a queue (32 memory beats), so that one waiting
        # for its consumer (a row not yet fetched, the divider) does not stop the fold at
        # once; the splitter behind it makes memory beats of the datapath's wide beats.
        m.submodules.results_fifo = results_fifo = fifo.SyncFIFOBuffered(
            width=dp.Result.size, depth=max(2, 32 * 16 // self.fold_lanes))
        m.submodules.splitter = splitter = ResultSplitter(dp.Result, dp.beats)
        m.d.comb += [results_fifo.w_en.eq(dp.results.valid), results_fifo.w_data.eq(dp.results.payload),
                     dp.results.ready.eq(results_fifo.w_rdy),
                     splitter.i.valid.eq(results_fifo.r_rdy), splitter.i.payload.eq(results_fifo.r_data),
                     results_fifo.r_en.eq(splitter.i.ready)]
        results_q = splitter.o
        # (a result beat's tag: its beat and its member, the bag its address follows from)
        m.submodules.divider = div = RowDivider(self.div_lanes, tag_bits=len(results_q.payload.beat)
                                                + len(results_q.payload.member))
        m.submodules.coef = coef = CoefStage(an.Member)
        m.submodules.in_flight = locks = RowsInFlight(A, IN_FLIGHT_ROWS)
        m.submodules.forwarder = fwd = RowForwarder(IN_FLIGHT_ROWS, beats)
        m.submodules.adagrad = ada = AdagradUnit(self.dim, self.adagrad_lanes)
        adagrad = cfg.optimizer == 1
        m.d.comb += [ada.lr.eq(cfg.lr), ada.eps.eq(cfg.eps)]
        wiring.connect(m, sch.ops, dp.ops)
        m.d.comb += upd.lr.eq(cfg.lr)

        def route(src, dst, when, payload=None):
            with m.If(when):
                m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                             dst.payload.eq(src.payload if payload is None else payload)]

        # The row store holds a part's table rows (its distinct rows at most), in fetch
        # order.  In dedup and refree every row is fetched as the analyzer discovers it, in
        # slot order, while the part is still being analysed (``prefetch``), and read by
        # slot: forward in item order; backward (SGD) each merged gradient, at the group's
        # end in slot order, meets its row there and goes back to the row's address;
        # row-wise Adagrad's backward reads its rows in the order of the update list, which
        # comes last (see the module docstring).
        by_slot = ~forward & ~baseline & ~adagrad
        baseline_bwd = ~forward & baseline     # (SGD only: baseline refuses Adagrad)
        # Backward by rows (dedup, refree): a pass over a table's bags per row group; the
        # groups after the job's first are checked to fit before it writes (``dry`` passes).
        by_rows = ~forward & ~baseline
        dry = Signal()
        merging = Signal()                      # (by rows) the pass's merge runs beside its analysis
        prefetch = ~baseline & ~dry
        # (a word of the store is a wide beat of the datapath: forward takes a row of D = 64 a
        # cycle at 64 lanes; the updaters take the memory beats of the words one by one)
        parts = self.fold_lanes // 16
        m.submodules.row_store = store = RowStore(p.slot_capacity, beats, A, parts=parts)
        wiring.connect(m, fetch.beats_out, store.rows)
        table_rows = stream.Signature(512).create()             # memory beats
        table_words = stream.Signature(dp.beat_bits).create()   # wide beats
        for rows, data_ in ((table_rows, store.out.payload.beat_data), (table_words, store.out.payload.data)):
            m.d.comb += [rows.valid.eq(store.out.valid), rows.payload.eq(data_)]
        m.d.comb += store.out.ready.eq(Mux(forward, table_words.ready, table_rows.ready))
        # Forward: table rows feed the datapath.  Backward: gradient rows feed the datapath
        # (dedup, refree; packed into wide beats) or the updater (baseline); table rows feed
        # the updater.
        m.submodules.grad_packer = grad_packer = BeatPacker(parts)
        route(table_words, dp.rows, forward)
        route(fetch_g.beats_out, grad_packer.i, ~forward & ~baseline)
        route(grad_packer.o, dp.rows, ~forward & ~baseline)
        scale_q_data = Signal(32)
        route(fetch_g.beats_out, upd.g, ~forward & baseline, Cat(fetch_g.beats_out.payload, scale_q_data))
        # Forward: each item's row, word by word, from the slots queued in item order;
        # Adagrad's backward: each update's row, beat by beat, in update-list order.
        m.submodules.want_q = want_q = fifo.SyncFIFOBuffered(width=p.slot_bits, depth=ITEMS_AHEAD)
        want_beat = counter_signal(beats)       # the word's first memory beat
        want_step = Mux(forward, parts, 1)
        # By slot: a merged gradient beat enters the updater as its row beat is asked of the
        # store; the asks wait in a queue, as the gradient beats do in the updater's scaling
        # FMAs, so that the store reads the rows ahead of the step that meets them (asked
        # together, the store's output queue held the store to a beat every five cycles).
        m.submodules.update_wants = update_wants = fifo.SyncFIFOBuffered(
            width=store.Want.size, depth=UPDATE_WANTS)
        wanted_beat = Signal(store.Want)
        m.d.comb += [wanted_beat.slot.eq(results_q.payload.member), wanted_beat.beat.eq(results_q.payload.beat)]
        with m.If(by_slot):
            res_ = results_q
            m.d.comb += [upd.g.valid.eq(res_.valid & update_wants.w_rdy),
                         update_wants.w_en.eq(res_.valid & upd.g.ready),
                         res_.ready.eq(upd.g.ready & update_wants.w_rdy),
                         upd.g.payload.eq(Cat(res_.payload.data, C(ONE_F32, 32))),
                         update_wants.w_data.eq(wanted_beat),
                         store.wanted.valid.eq(update_wants.r_rdy), store.wanted.payload.eq(update_wants.r_data),
                         update_wants.r_en.eq(store.wanted.ready)]
        with m.Elif(prefetch):               # (forward, or Adagrad's backward)
            m.d.comb += [store.wanted.valid.eq(want_q.r_rdy), store.wanted.payload.slot.eq(want_q.r_data),
                         store.wanted.payload.beat.eq(want_beat)]
            with m.If(store.wanted.valid & store.wanted.ready):
                m.d.sync += want_beat.eq(Mux(want_beat == beats - want_step, 0, want_beat + want_step))
                m.d.comb += want_q.r_en.eq(want_beat == beats - want_step)
        # baseline: a repeated row's beats come from its previous update, still in flight
        route(table_rows, fwd.i, baseline_bwd)
        route(fwd.o, upd.e, baseline_bwd)
        m.d.comb += [fwd.result.valid.eq(baseline_bwd & upd.out.valid & upd.out.ready),
                     fwd.result.payload.eq(upd.out.payload)]
        route(table_rows, upd.e, by_slot)
        route(results_q, ada.g, ~forward & ~baseline & adagrad, results_q.payload.data)
        route(table_rows, ada.e, ~forward & adagrad)
        # A refused batch whose merge had begun (MERGE_DRAIN): its results go nowhere.
        merge_dropped = Signal()
        with m.If(merge_dropped):
            m.d.comb += [results_q.ready.eq(1), upd.g.valid.eq(0), update_wants.w_en.eq(0), ada.g.valid.eq(0)]
        # by slot: each row beat's address, from the store to the writer beside the updater
        m.submodules.beat_addr_q = beat_addr_q = fifo.SyncFIFOBuffered(width=A, depth=64)
        m.d.comb += [beat_addr_q.w_en.eq(by_slot & upd.e.valid & upd.e.ready),
                     beat_addr_q.w_data.eq(store.out.payload.addr)]
        with m.If(by_slot):
            m.d.comb += [upd.e.valid.eq(table_rows.valid & beat_addr_q.w_rdy),
                         table_rows.ready.eq(upd.e.ready & beat_addr_q.w_rdy)]

        # Work leaves the controller through small queues (no combinational loop between
        # the controller's and the consumers' handshakes): scheduler items, table-row and
        # gradient-row addresses to fetch, and the addresses the updated rows go back to.
        # The rows the analyzer discovers (prefetch) queue for the fetcher as they come, so
        # the table rows to fetch queue for a part's distinct rows (their write addresses go
        # to the row store).
        m.submodules.item_q = item_q = fifo.SyncFIFOBuffered(width=sch.Item.size, depth=ITEMS_AHEAD)
        m.submodules.row_q = row_q = fifo.SyncFIFOBuffered(width=A, depth=max(4, p.slot_capacity))
        m.submodules.grad_q = grad_q = fifo.SyncFIFOBuffered(width=A, depth=4)
        m.submodules.write_q = write_q = fifo.SyncFIFOBuffered(width=A, depth=32)
        # Adagrad: each updated row's state beat (to fetch, its lane, where it goes back)
        m.submodules.state_q = state_q = fifo.SyncFIFOBuffered(width=A, depth=4)
        m.submodules.lane_q = lane_q = fifo.SyncFIFOBuffered(width=5, depth=IN_FLIGHT_ROWS)
        m.submodules.state_write_q = state_write_q = fifo.SyncFIFOBuffered(width=A, depth=IN_FLIGHT_ROWS)
        # baseline backward: each gradient row's scale (1, or fl(1/len) for mean pooling)
        m.submodules.scale_q = scale_q = fifo.SyncFIFOBuffered(width=32, depth=IN_FLIGHT_ROWS)
        gbeat = counter_signal(beats)
        m.d.comb += scale_q_data.eq(scale_q.r_data)
        with m.If(~forward & baseline & upd.g.valid & upd.g.ready):
            m.d.sync += gbeat.eq(Mux(gbeat == beats - 1, 0, gbeat + 1))
            with m.If(gbeat == beats - 1):
                m.d.comb += scale_q.r_en.eq(1)
        m.d.comb += [sch.items.valid.eq(item_q.r_rdy), sch.items.payload.eq(item_q.r_data),
                     item_q.r_en.eq(sch.items.ready),
                     fetch.rows.payload.eq(row_q.r_data),
                     fetch_g.rows.valid.eq(grad_q.r_rdy), fetch_g.rows.payload.eq(grad_q.r_data),
                     grad_q.r_en.eq(fetch_g.rows.ready)]
        item = Signal(sch.Item)
        issue = Signal()                        # the controller offers one unit of work ...
        need_item, need_row, need_grad, need_write = Signal(), Signal(), Signal(), Signal()
        need_want = Signal()                    # ... its row read from the row store (forward, Adagrad's backward)
        discovering = Signal()                  # a row the analyzer discovered, to fetch
        disc_slot = Signal(p.slot_bits)         # ... into the row store's slot disc_slot
        need_state = Signal()                   # ... and the row's Adagrad state beat
        item_row = Signal(p.index_width)        # ... for table row item_row ...
        item_outside = Signal()                 # (baseline: a row outside its table, see stream_lookups)
        item_slot = Signal(p.slot_bits)         # ... of the part's slot item_slot ...
        grad_bag = Signal(p.bag_bits)           # ... and gradient row grad_bag of the part
        # Updates that read what an earlier update writes: baseline's repeated rows take it
        # from the forwarder; Adagrad's shared state beats wait for the write.  Both wait
        # while the table of rows in flight is full.
        lock = baseline_bwd | ~forward & adagrad
        state_addr = Signal(A)
        # Adagrad: an update whose state beat is the previous update's need not wait for it:
        # the Adagrad unit carries that beat on (``chained``; rows renumbered by first use
        # share state beats sixteen in a row)
        prev_state, prev_state_valid = Signal(A), Signal()
        chained = adagrad & prev_state_valid & (state_addr == prev_state)
        locked = lock & (locks.full | locks.hit & adagrad & ~chained)
        forwards = baseline_bwd & need_row
        need_lock = need_row | need_state       # (the lock's key: the row, or the state beat)
        taken = issue & (~need_item | item_q.w_rdy) & (~need_row | row_q.w_rdy) & ~(need_lock & locked) \
            & (~need_want | want_q.w_rdy) \
            & (~need_grad | grad_q.w_rdy & scale_q.w_rdy) & (~need_write | write_q.w_rdy) \
            & (~need_state | state_q.w_rdy & lane_q.w_rdy & state_write_q.w_rdy) \
            & (~forwards | fwd.issue.ready)
        m.d.comb += [item_q.w_data.eq(item), item_q.w_en.eq(taken & need_item),
                     row_q.w_en.eq(taken & need_row | discovering), grad_q.w_en.eq(taken & need_grad),
                     want_q.w_en.eq(taken & need_want), want_q.w_data.eq(item_slot),
                     scale_q.w_en.eq(taken & need_grad & baseline_bwd),
                     write_q.w_en.eq(taken & need_write), write_q.w_data.eq(row_q.w_data),
                     store.addr_wr.slot.eq(disc_slot), store.addr_wr.addr.eq(row_q.w_data),
                     store.addr_wr.en.eq(discovering),
                     state_q.w_en.eq(taken & need_state), state_q.w_data.eq(state_addr),
                     lane_q.w_en.eq(taken & need_state), lane_q.w_data.eq(Cat(item_row[:4], chained)),
                     state_write_q.w_en.eq(taken & need_state), state_write_q.w_data.eq(state_addr),
                     locks.addr.eq(Mux(adagrad, state_addr, row_q.w_data)),
                     locks.push.eq(taken & need_lock & lock),
                     fwd.issue.valid.eq(taken & forwards), fwd.issue.payload.forwarded.eq(locks.latest_hit),
                     fwd.issue.payload.src.eq(locks.latest), fwd.issue.payload.slot.eq(locks.slot)]
        with m.If(taken & need_state):
            m.d.sync += [prev_state.eq(state_addr), prev_state_valid.eq(1)]
        m.d.comb += [fetch_s.rows.valid.eq(state_q.r_rdy), fetch_s.rows.payload.eq(state_q.r_data),
                     state_q.r_en.eq(fetch_s.rows.ready),
                     ada.state.valid.eq(fetch_s.beats_out.valid),
                     ada.state.payload.beat.eq(fetch_s.beats_out.payload),
                     ada.state.payload.lane.eq(lane_q.r_data[:4]), ada.state.payload.chained.eq(lane_q.r_data[4]),
                     fetch_s.beats_out.ready.eq(ada.state.ready), lane_q.r_en.eq(ada.state.ready)]

        # ---- configuration-derived state ---------------------------------------------
        T, B = cfg.num_tables, cfg.batch_size
        t = Signal(range(self.max_tables + 2))
        tb = Signal(48)                         # t * B
        b0 = Signal(32)                         # first bag of the part
        part_row0 = Signal(48)                  # b0 * T + t: the part's first output row
        table = cfg.tables[t]
        # Rows discovered by the analyzer (prefetch): queued at once for the fetcher, their
        # write-back addresses into the row store; a row outside its table (a batch the
        # check will refuse) is never read.  A row is fetched only once no rollback can
        # remove its slot (``committed``); the slots of a bag rolled back are dropped.
        disc = an.discovered
        m.d.comb += [discovering.eq(prefetch & disc.valid & (disc.row < table.rows)),
                     disc_slot.eq(disc.slot)]
        # Row groups (backward by rows): the pass's group g of table t's 2**groups; a pass
        # walks the table's bags in chunks formed as parts are (``chunk_cont``: the pass's
        # next chunk, the analyzer and the merge going on; so, at the pass's end, a pass of
        # several chunks).
        g = Signal(MAX_ROW_GROUP_BITS)
        last_group = g == (C(1, MAX_ROW_GROUP_BITS + 1) << table.groups) - 1
        chunk_cont = Signal()
        chunk_waits = Signal()                  # a pass's chunk is in; the next waits for the check
        first_checks_itself = Signal()          # table 0's first group: one chunk, no dry pass

        def next_group():
            """The next pass: the table's next row group, or the next table."""
            with m.If(~by_rows | last_group):
                m.d.sync += [t.eq(t + 1), tb.eq(tb + B), g.eq(0)]
            with m.Else():
                m.d.sync += g.eq(g + 1)
            m.d.sync += [b0.eq(0), chunk_cont.eq(0)]

        most = max(p.slot_capacity, p.max_lookups)
        fetched = Signal(range(most + 1))       # rows of the part sent to the fetcher
        arrived = Signal(range(most * beats + 1))       # and their beats come back
        dropping = Signal()
        m.d.comb += dropping.eq(prefetch & an.inserted & (fetched >= an.num_rows))
        may_fetch = ~prefetch | (fetched < an.committed)
        m.d.comb += [fetch.rows.valid.eq(row_q.r_rdy & may_fetch & ~dropping),
                     row_q.r_en.eq(fetch.rows.valid & fetch.rows.ready | row_q.r_rdy & dropping)]
        with m.If(fetch.rows.valid & fetch.rows.ready):
            m.d.sync += fetched.eq(fetched + 1)
        with m.If(fetch.beats_out.valid & fetch.beats_out.ready):
            m.d.sync += arrived.eq(arrived + 1)
        all_arrived = arrived == fetched * beats
        # (a discovery has its own address: the stream's states set item_row whether a member
        # is at hand or not, and a row group's chunk may still discover its last rows in the
        # cycles after the controller has begun to stream the chunk's members)
        # (a baseline lookup outside its table reads the staging array's first row instead,
        # which the memory-map check has placed: stream_lookups)
        staging_row0 = Mux(forward, cfg.pooled_addr, cfg.grad_addr)
        m.d.comb += [row_q.w_data.eq(Mux(item_outside & ~discovering, staging_row0,
                                         table.base + Mux(discovering, disc.row, item_row) * table.stride)),
                     state_addr.eq(table.state + (item_row >> 4)),
                     grad_q.w_data.eq(staging_beat(cfg.grad_addr, part_row0 + grad_bag * T, 0, beats,
                                                   self.staging_stripe))]

        # ---- bag lengths of the current part ------------------------------------------
        m.submodules.bag_len = bl_mem = memory.Memory(shape=p.mult_bits, depth=p.max_bags, init=[])
        bl_wr = bl_mem.write_port()
        bl_rd = bl_mem.read_port(transparent_for=(bl_wr,))
        # the bag length of a result (forward, mean) and of a member (backward, mean)
        len_of_result, len_of_member = bl_mem.read_port(domain="comb"), bl_mem.read_port(domain="comb")
        # fl(1/n), rounded once, as PyTorch's backward uses it
        m.submodules.inverse = inv_mem = memory.Memory(
            shape=32, depth=p.max_bag_len + 1, init=[ONE_F32] + [f32_bits(1 / n) for n in range(1, p.max_bag_len + 1)])
        inv_of_member, inv_of_bag = inv_mem.read_port(domain="comb"), inv_mem.read_port(domain="comb")
        nb = Signal(range(p.max_bags + 1))      # bags of the part (candidate, then final)
        part_lo = Signal(32)                    # index of the part's first lookup
        lookups = Signal(32)
        prev = Signal(64)
        k = Signal(48)
        closed = Signal()
        end_sent = Signal()

        # ---- walking the part's lookups with their bag labels ---------------------------
        bi = Signal(range(p.max_bags + 1))      # bag of the next lookup
        rem = Signal(p.mult_bits + 1)           # lookups left in bag bi
        len_state = Signal(2)                   # 0: bag_len[bi] addressed, 1: readable, 2: walking
        cur_len = Signal(p.mult_bits)           # length of bag bi
        m.d.comb += bl_rd.addr.eq(bi)

        error = Signal(8)
        m.d.comb += [self.error.eq(error)]
        # The write gate: a job that has found an error writes nothing, whatever would write;
        # before the batch check's verdict writes wait (``baseline`` streams its first part
        # beside the check).
        writes_off = (error != 0) | check.done & (check.error != 0)
        writes_wait = ~check.done & ~writes_off
        m.d.comb += [arb.port0.cmd.valid.eq(writer.cmd.valid & ~writes_off & ~writes_wait),
                     arb.port0.cmd.payload.eq(writer.cmd.payload),
                     writer.cmd.ready.eq(arb.port0.cmd.ready & ~writes_wait | writes_off)]
        m.d.sync += cnt.cycles.eq(cnt.cycles + self.busy)
        m.d.comb += self.busy.eq(1)
        # Counters tapped at the handshakes (memory traffic in beats).
        def count(counter, event):
            with m.If(event):
                m.d.sync += counter.eq(counter + 1)
        fired = lambda port: port.cmd.valid & port.cmd.ready
        count(cnt.table_reads, fired(fetch.port))
        count(cnt.state_reads, fired(fetch_s.port))
        count(cnt.grad_reads, fired(fetch_g.port))
        m.d.sync += cnt.input_reads.eq(cnt.input_reads + fired(offs.port) + fired(idxr.port) + fired(wts.port)
                                       + fired(check.offsets_port) + fired(check.indices_port))
        count(cnt.pooled_writes, fired(arb.port0) & forward)
        writes_state = adagrad & ada.out.payload.state
        count(cnt.table_writes, fired(arb.port0) & ~forward & ~writes_state)
        count(cnt.state_writes, fired(arb.port0) & ~forward & writes_state)
        with m.If(sch.ops.valid & sch.ops.ready & ~sch.ops.payload.final):     # (finals are no arithmetic)
            m.d.sync += [cnt.adds.eq(cnt.adds + ~sch.ops.payload.src_zero),
                         cnt.muls.eq(cnt.muls + (sch.ops.payload.c != ONE_F32))]

        # Writes: forward, bag b of table t to staging row b*T + t of the pooled output, as results come
        # (members complete in any order);
        # backward, each updated row to the address queued when it was fetched.
        # Forward results of a mean-pooled table pass the row divider (division by the bag's
        # length; 16 / div_lanes cycles a beat), others go straight to the write queue.
        res = results_q.payload
        res_len = len_of_result.data
        m.d.comb += len_of_result.addr.eq(res.member)
        divided = forward & table.mean
        route(results_q, div.i, divided,
              Cat(res.data, small_int_to_f32(m, res_len, p.mult_bits), res_len != 0, res.beat, res.member))
        pooled = Signal(div.Out)                        # a result beat to write, and its tag
        pooled_valid, pooled_ready = Signal(), Signal()
        with m.If(divided):
            m.d.comb += [pooled.eq(div.o.payload), pooled_valid.eq(div.o.valid), div.o.ready.eq(pooled_ready)]
        with m.Elif(forward):
            m.d.comb += [pooled.data.eq(res.data), pooled.tag.eq(Cat(res.beat, res.member)),
                         pooled_valid.eq(results_q.valid), results_q.ready.eq(pooled_ready)]
        out_beat = pooled.tag[:len(res.beat)]
        out_bag = pooled.tag[len(res.beat):]            # of the part
        # Writes that nothing in the part reads again (pooled rows; rows updated by slot)
        # queue and go to memory in bursts, or when the part's stream is over (flush).
        m.submodules.burst_q = burst_q = fifo.SyncFIFOBuffered(width=A + 512, depth=2 * WRITE_BURST)
        batched = forward | by_slot
        burst, flush_writes = Signal(), Signal()
        with m.If(burst_q.level >= WRITE_BURST):
            m.d.sync += burst.eq(1)
        with m.Elif(burst_q.level == 0):
            m.d.sync += burst.eq(0)
        with m.If(forward):
            m.d.comb += [burst_q.w_en.eq(pooled_valid), pooled_ready.eq(burst_q.w_rdy),
                         burst_q.w_data.eq(Cat(staging_beat(cfg.pooled_addr, part_row0 + out_bag * T, out_beat, beats,
                                                            self.staging_stripe)[:A],
                                               pooled.data))]
        with m.Elif(by_slot):
            m.d.comb += [burst_q.w_en.eq(upd.out.valid), upd.out.ready.eq(burst_q.w_rdy),
                         burst_q.w_data.eq(Cat(beat_addr_q.r_data, upd.out.payload)),
                         beat_addr_q.r_en.eq(upd.out.valid & burst_q.w_rdy)]
        wbeat = counter_signal(beats)
        with m.If(batched):
            go = burst | flush_writes
            m.d.comb += [writer.cmd.valid.eq(burst_q.r_rdy & go), writer.cmd.payload.write.eq(1),
                         writer.cmd.payload.addr.eq(burst_q.r_data[:A]),
                         writer.cmd.payload.data.eq(burst_q.r_data[A:]),
                         burst_q.r_en.eq(writer.cmd.ready & go)]
        with m.Else():                          # the updater's rows (baseline), or Adagrad's rows and states
            m.d.comb += [writer.cmd.valid.eq(Mux(adagrad, ada.out.valid, upd.out.valid)),
                         writer.cmd.payload.write.eq(1),
                         writer.cmd.payload.addr.eq(Mux(writes_state, state_write_q.r_data, write_q.r_data + wbeat)),
                         writer.cmd.payload.data.eq(Mux(adagrad, ada.out.payload.data, upd.out.payload)),
                         upd.out.ready.eq(writer.cmd.ready & ~adagrad),
                         ada.out.ready.eq(writer.cmd.ready & adagrad)]
            with m.If(fired(writer) & ~writes_state):
                m.d.sync += wbeat.eq(Mux(wbeat == beats - 1, 0, wbeat + 1))
            with m.If(fired(writer) & Mux(adagrad, writes_state, wbeat == beats - 1)):
                m.d.comb += [write_q.r_en.eq(1), locks.pop.eq(lock), state_write_q.r_en.eq(adagrad)]

        # Members pass the coefficient stage: c = fl(a * b) with a = the pair's fold of
        # weights (weighted; dedup's pairs are single lookups), the multiplicity (refree) or
        # 1 (dedup), and b = fl(1/len) (backward, mean pooling) or 1.
        mean_bwd = ~forward & table.mean
        mi = an.members.payload
        m.d.comb += [len_of_member.addr.eq(mi.bag), inv_of_member.addr.eq(len_of_member.data),
                     coef.i.valid.eq(an.members.valid), an.members.ready.eq(coef.i.ready),
                     coef.i.payload.payload.eq(mi),
                     coef.i.payload.a.eq(Mux(cfg.weighted, mi.c,
                                             Mux(cfg.mode == MODE_REFREE,
                                                 small_int_to_f32(m, mi.mult, p.mult_bits), ONE_F32))),
                     coef.i.payload.b.eq(Mux(mean_bwd, inv_of_member.data, ONE_F32))]
        mem_ = coef.o.payload.payload
        # refree: one operation per key; dedup: mult operations of c = 1 (sum), or of kind 1
        # with c = fl(1/len) or w (mean, weighted backward: fl(fl(c * G) + g), the
        # per-occurrence terms)
        m.d.comb += [item.c.eq(coef.o.payload.product),
                     item.repeat.eq(Mux(cfg.mode == MODE_REFREE, 1, mem_.mult)),
                     item.kind.eq(~forward & (table.mean | cfg.weighted) & (cfg.mode == MODE_DEDUP))]
        # (in baseline the analyzer only decides the parts: it makes no member lists)
        # Each lookup's weight (1 unless weighted), read beside its index.
        weight = Mux(cfg.weighted, wts.data.payload, ONE_F32)
        # The job's first part takes its indices from the batch check, which reads them at
        # the same time (``sharing``): the input is read once for a batch of one part.
        first_part, sharing = Signal(), Signal()
        shared_left = Signal(32)                # indices the part still takes from the check
        lookup_index = Mux(sharing, check.shared.payload, idxr.data.payload)
        lookup_group = row_group(m, lookup_index[:p.index_width], table.groups)     # (backward by rows)
        lookup_valid = Mux(sharing, check.shared.valid, idxr.data.valid) & (~cfg.weighted | wts.data.valid)
        indices_left = Mux(sharing, shared_left != 0, idxr.busy)

        # Backward by rows: a run of lookups outside the pass's row group, up to the end of the
        # index beat at hand and of the bag, is passed over in one cycle (read from the index
        # reader, unweighted, not shared with the check: the passes after a job's first), so
        # that a pass costs about a cycle per beat of other groups' lookups, not per lookup.
        view = idxr.beat
        N_VIEW = len(view.elems)
        outside = [row_group(m, view.elems[i][:p.index_width], table.groups) != g for i in range(N_VIEW)]
        run = Signal(range(N_VIEW + 1))         # outside lookups from the view's lane on
        with m.Switch(view.lane):
            for lane0 in range(N_VIEW):
                with m.Case(lane0):
                    r = C(N_VIEW - lane0, len(run))
                    for j in reversed(range(N_VIEW - lane0)):
                        r = Mux(outside[lane0 + j], r, j)
                    m.d.comb += run.eq(r)
        out_of_group_run = Signal(range(N_VIEW + 1))
        can_skip = by_rows & ~sharing & ~cfg.weighted & view.valid
        bounded = Mux(run < view.avail, run, view.avail)
        m.d.comb += [out_of_group_run.eq(Mux(can_skip, Mux(bounded < rem, bounded, rem), 0))]

        def take_lookup(when):
            m.d.comb += [idxr.data.ready.eq(when & ~sharing), check.shared.ready.eq(when & sharing),
                         wts.data.ready.eq(when & cfg.weighted)]
            with m.If(when & sharing):
                m.d.sync += shared_left.eq(shared_left - 1)

        def start_lookups(first, count, shared=C(0, 1)):
            """Read the indices (unless ``shared``) and the weights of lookups first ..
            first+count-1."""
            m.d.comb += [idxr.start.eq(~shared), idxr.base.eq(cfg.indices_addr), idxr.first.eq(first),
                         idxr.narrow.eq(cfg.indices_int32),
                         idxr.count.eq(count),
                         wts.start.eq(cfg.weighted), wts.base.eq(cfg.weights_addr), wts.first.eq(first),
                         wts.count.eq(count)]

        # Baseline backward: each gradient row's scale, 1, w or fl(1/len) of its bag.
        # (the buffer holds each lookup's ``weight``: 1 unless weighted)
        replayed = lbuf.out.payload
        m.d.comb += [lbuf.num_bags.eq(an.bags_kept), lbuf.final.eq(an.inserted)]
        m.d.comb += [inv_of_bag.addr.eq(replayed.len),
                     scale_q.w_data.eq(Mux(mean_bwd, inv_of_bag.data, replayed.weight))]

        # Slipstream's stale set (backward): a lookup of a (table, row) it holds is left out
        # of its row group's pass (by rows) or of the replay (baseline), so that nothing
        # merges, reads or writes its row; loaded from the job's list (STALE_LOAD).
        stale_hit = Signal() if self.stale.enabled else C(0, 1)
        if self.stale.enabled:
            tbits = table_bits(self.max_tables)
            m.submodules.stale_set = stale_set = StaleSet(self.stale, p.index_width + tbits)
            asked = Mux(baseline, replayed.row, lookup_index)
            entry = idxr.data.payload
            m.d.comb += [stale_set.key.eq(Cat(asked[:p.index_width], t[:tbits])),
                         stale_set.insert.payload.eq(Cat(entry[:p.index_width],
                                                         entry[ENTRY_TABLE_SHIFT:ENTRY_TABLE_SHIFT + tbits])),
                         stale_hit.eq(~forward & cfg.stale_use & stale_set.hit)]

        def count_stale(event):
            """A stale lookup passed over: counted, and its row once (its update skipped)."""
            if self.stale.enabled:
                count(cnt.stale_skipped, event)
                count(cnt.stale_rows_skipped, event & stale_set.first)
                with m.If(event):           # (an If: two callers, one state)
                    m.d.comb += stale_set.mark.eq(1)

        # ---- 0. the memory map, a (table, region) pair a cycle ----------------------------
        m.submodules.memory_map = mmap = MemoryMapCheck(self.Config, self.max_tables, A, beats, self.staging_stripe,
                                                        stale_list=self.stale.enabled)
        m.d.comb += [mmap.config.eq(cfg), mmap.forward.eq(forward)]

        def lookup_walker(source_valid, on_lookup, skip=None):
            """Label the lookups of the part with their bag: ``on_lookup()`` offers the
            lookup at hand, of bag ``bi``, and returns whether it is taken; or, when
            ``skip`` (a count) is not 0, that many lookups of the bag are passed over in
            this cycle, taken from the index reader's beat.  The next bag's length is
            read ahead (``bag_len[bi + 1]`` is on the read port), so a bag's last lookup
            moves to the next bag at once: bag boundaries cost no cycle, an empty bag one,
            the part's first bag two."""
            next_bag = Signal()
            skipping = Signal()
            if skip is not None:
                m.d.comb += skipping.eq((len_state == 2) & (rem != 0) & (skip != 0))
            m.d.comb += bl_rd.addr.eq(Mux(len_state == 0, bi, Mux(next_bag, bi + 2, bi + 1)))
            with m.If(len_state == 0):
                m.d.sync += len_state.eq(1)
            with m.Elif(len_state == 1):        # bag_len[bi] now; bag_len[bi + 1] next
                m.d.sync += [rem.eq(bl_rd.data), cur_len.eq(bl_rd.data), len_state.eq(2)]
            with m.Elif(rem == 0):
                m.d.comb += next_bag.eq(1)
            with m.Elif(skipping):
                m.d.comb += idxr.take.eq(skip)
                with m.If(skip == rem):
                    m.d.comb += next_bag.eq(1)
                with m.Else():
                    m.d.sync += rem.eq(rem - skip)
            with m.Elif(source_valid):
                taken = on_lookup()
                with m.If(taken & (rem == 1)):
                    m.d.comb += next_bag.eq(1)
                with m.Elif(taken):
                    m.d.sync += rem.eq(rem - 1)
            with m.If(next_bag):
                m.d.sync += [bi.eq(bi + 1), rem.eq(bl_rd.data), cur_len.eq(bl_rd.data)]

        # (taken at the scheduler's start and again at its end)
        m.d.comb += sch.num_members.eq(Mux(forward, Mux(an.full, an.full_bag, nb), an.num_rows))

        def start_merge(early):
            """The scheduler and the datapath take a part (a row group): its members are the
            bags (forward, ``early``: each bag's result as soon as it is complete) or the
            distinct rows (backward, ``early`` off: their count is known at the group's
            end, and every final comes then)."""
            m.d.comb += [sch.start.eq(1), sch.share.eq(cfg.mode == MODE_REFREE), sch.early.eq(early),
                         dp.start.eq(1)]
            m.d.sync += [k.eq(0), end_sent.eq(0), prev_state_valid.eq(0)]     # (nothing sent yet)

        def stream_gradients():
            """Backward (dedup, refree): the members into the scheduler, each bag's first with
            its gradient row's read; Adagrad's update list (``upd``) reads its rows from the
            store and its state beats."""
            m.d.comb += [issue.eq(coef.o.valid), coef.o.ready.eq(taken),
                         item_row.eq(mem_.row), grad_bag.eq(mem_.bag), item_slot.eq(mem_.slot),
                         item.item.eq(mem_.bag), item.member.eq(mem_.slot), item.first.eq(mem_.first),
                         item.member_last.eq(mem_.member_last)]
            with m.If(mem_.upd):
                m.d.comb += [need_want.eq(1), need_write.eq(1), need_state.eq(1)]
            with m.Else():
                m.d.comb += [need_item.eq(1), need_grad.eq(mem_.first)]

        def stream_lookups():
            """``baseline``: the lookup buffer's lookups as items, each with its own row read,
            from the part's start (the buffer gives a bag once the analyzer keeps it):
            forward, bags interleaved, into the fold; backward, in index order, each with its
            bag's gradient row, through the updater and back.  A row outside its table (a
            batch the check will refuse, streamed before the verdict) reads the first row of
            the job's staging array instead (the pooled output, the gradient: placed by the
            memory-map check, unlike an index past a table, or a table of no rows); its
            result and update are never written.  Backward, a stale row's lookup is passed
            over (Slipstream)."""
            m.d.comb += [issue.eq(lbuf.out.valid & ~stale_hit), need_row.eq(1), lbuf.out.ready.eq(taken | stale_hit),
                         item_row.eq(replayed.row), item_outside.eq(replayed.row >= table.rows)]
            count_stale(lbuf.out.valid & stale_hit)     # (backward only: stale_hit)
            with m.If(forward):
                m.d.comb += [need_item.eq(1), item.item.eq(k), item.member.eq(replayed.bag), item.first.eq(1),
                             item.member_last.eq(replayed.last), item.c.eq(replayed.weight), item.repeat.eq(1)]
                with m.If(taken):
                    m.d.sync += k.eq(k + 1)
            with m.Else():
                m.d.comb += [need_grad.eq(1), need_write.eq(1), grad_bag.eq(replayed.bag)]
                with m.If(taken):
                    m.d.sync += cnt.muls.eq(cnt.muls + (scale_q.w_data != ONE_F32))

        # Every unit downstream of the analyzer has finished (a part's end, a merge dropped).
        pipeline_idle = (~sch.busy & ~dp.busy & ~coef.busy & ~div.busy & ~upd.busy & ~fwd.busy & ~ada.busy
                         & (write_q.level == 0) & (burst_q.level == 0) & ~store.busy & (results_fifo.level == 0)
                         & ~splitter.busy & ~grad_packer.busy & (row_q.level == 0) & (want_q.level == 0)
                         & (beat_addr_q.level == 0) & (update_wants.level == 0))

        def begin_batch():
            """The batch check starts; parts are formed beside it.  (By rows: dry passes
            check every row group before the first write, but table 0's first when its pass
            is one chunk: that pass checks itself before anything streams; one table of one
            such group has none.)"""
            one_chunk = (cfg.batch_size <= p.max_bags) & (cfg.num_indices <= p.max_lookups)
            dry_run = by_rows & ((cfg.num_tables > 1) | (cfg.tables[0].groups != 0) | ~one_chunk)
            m.d.comb += [check.start.eq(1), check.share.eq(~dry_run)]
            m.d.sync += [t.eq(0), tb.eq(0), g.eq(0), b0.eq(0), chunk_cont.eq(0), dry.eq(dry_run),
                         first_part.eq(~dry_run), first_checks_itself.eq(one_chunk)]
            m.next = "PART_START"

        with m.FSM(name="engine") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.comb += mmap.restart.eq(1)
                    if self.stale.enabled:      # (the job counts its stale rows afresh)
                        m.d.comb += stale_set.unmark.eq(1)
                    m.d.sync += [cfg.eq(self.config), error.eq(0), cnt.eq(0), k.eq(0), t.eq(0), tb.eq(0),
                                 first_part.eq(1)]
                    m.next = "CHECK_CONFIG"

            # ---- 0. the memory map: table i against region j ----------------------------
            with m.State("CHECK_CONFIG"):
                with m.If(adagrad & baseline):
                    m.d.sync += error.eq(ErrorCode.ADAGRAD_IN_BASELINE)
                    m.next = "IDLE"
                with m.Elif(mmap.conflict):
                    m.d.sync += error.eq(ErrorCode.ACCESS_OUTSIDE_TABLES)
                    m.next = "IDLE"
                with m.Elif(~mmap.last):
                    m.d.comb += mmap.step.eq(1)
                if self.stale.enabled:          # (Slipstream: a backward job's stale set first)
                    with m.Elif(~stale_set.ready):
                        pass                    # (the set's clear after reset)
                    with m.Elif(~forward & cfg.stale_count.any()):
                        m.d.comb += [idxr.start.eq(1), idxr.base.eq(cfg.stale_addr), idxr.first.eq(0),
                                     idxr.count.eq(cfg.stale_count), idxr.narrow.eq(0), stale_set.clear.eq(1)]
                        m.next = "STALE_LOAD"
                with m.Else():
                    begin_batch()

            if self.stale.enabled:
                with m.State("STALE_LOAD"):     # the backward job's stale set: cleared, then an entry a cycle
                    m.d.comb += [idxr.data.ready.eq(stale_set.insert.ready),
                                 stale_set.insert.valid.eq(idxr.data.valid)]
                    with m.If(~idxr.busy & stale_set.full):     # (the set left empty)
                        m.d.comb += stale_set.clear.eq(1)
                        m.d.sync += error.eq(ErrorCode.STALE_SET_FULL)
                        m.next = "IDLE"
                    with m.Elif(~idxr.busy):
                        begin_batch()

            # ---- 2. form a part -----------------------------------------------------------
            with m.State("PART_START"):
                m.d.sync += part_row0.eq(b0 * T + t)
                with m.If((t == T) & dry):      # every row group fits: now the job
                    m.d.sync += [t.eq(0), tb.eq(0), g.eq(0), b0.eq(0), dry.eq(0)]
                with m.Elif(t == T):            # (a batch of no bags: only its check)
                    with m.If(check.done):
                        m.d.sync += error.eq(check.error)
                        m.next = "IDLE"
                with m.Elif(dry & (t == 0) & (g == 0) & first_checks_itself & ~chunk_cont):
                    next_group()                # (table 0's first group checks itself)
                with m.Elif(b0 == B):           # next table
                    m.d.sync += [t.eq(t + 1), tb.eq(tb + B), b0.eq(0)]
                with m.Else():
                    left = B - b0
                    m.d.comb += [offs.start.eq(1), offs.base.eq(cfg.offsets_addr), offs.first.eq(tb + b0),
                                 offs.narrow.eq(cfg.offsets_int32),
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
                with m.If(~offs.busy & ~chunk_cont):    # a part, or a row group's pass, starts
                    m.d.comb += [store.start.eq(1), store.by_slot.eq(prefetch), store.wide.eq(forward),
                                 lbuf.start.eq(1)]
                    m.d.sync += [fetched.eq(0), arrived.eq(0)]
                    m.d.comb += [an.start.eq(1), an.backward.eq(~forward), an.skip_updates.eq(by_slot),
                                 an.partition_only.eq(baseline | dry),
                                 an.weighted.eq(cfg.weighted & ~baseline),
                                 an.split.eq(cfg.weighted & (cfg.mode == MODE_DEDUP))]
                with m.If(~offs.busy & ~chunk_cont & by_rows & ~dry):
                    start_merge(early=C(0, 1))  # (beside the analysis: its finals come at the end)
                    m.d.sync += merging.eq(1)
                with m.If(~offs.busy & baseline):   # the lookups stream beside the analysis
                    m.d.comb += [lbuf.replay.eq(1), lbuf.interleave.eq(forward)]
                    with m.If(forward):
                        start_merge(early=C(1, 1))
                with m.If(~offs.busy):
                    start_lookups(part_lo, lookups, shared=first_part)
                    m.d.comb += [check.share_set.eq(first_part), check.share_count.eq(lookups)]
                    m.d.sync += [bi.eq(0), len_state.eq(0), first_part.eq(0), sharing.eq(first_part),
                                 shared_left.eq(lookups)]
                    m.next = "PART_ANALYZE"

            with m.State("PART_ANALYZE"):       # lookups into the analyzer
                m.d.comb += [an.lookups.payload.row.eq(lookup_index), an.lookups.payload.bag.eq(bi),
                             an.lookups.payload.weight.eq(weight)]
                with m.If(merging):             # (backward by rows: the bags' pairs as they complete)
                    stream_gradients()
                with m.If(baseline):
                    stream_lookups()

                def feed():
                    # (by rows: only the group's lookups enter the analyzer)
                    # (Slipstream: nor a stale row's)
                    in_group = ~by_rows | (lookup_group == g) & ~stale_hit
                    count_stale(by_rows & ~dry & (lookup_group == g) & stale_hit)
                    taken_ = Mux(in_group, an.lookups.ready, 1)
                    m.d.comb += an.lookups.valid.eq(in_group)
                    take_lookup(taken_)
                    m.d.comb += [lbuf.write.en.eq(baseline & an.lookups.ready), lbuf.write.row.eq(lookup_index),
                                 lbuf.write.weight.eq(weight), lbuf.write.bag.eq(bi),
                                 lbuf.write.first.eq(rem == cur_len), lbuf.write.last.eq(rem == 1)]
                    return taken_
                # (a check that ends before the shared indices do has found an error)
                with m.If(indices_left & ~(sharing & check.done)):
                    lookup_walker(lookup_valid, feed, skip=out_of_group_run)
                with m.Elif(by_rows & (b0 + nb != B)):  # the pass's next chunk, once the check
                    m.d.sync += sharing.eq(0)           # has passed (its offsets are sound)
                    m.d.comb += chunk_waits.eq(1)
                    # (a dry pass whose group is already too large need not read on; a pass of
                    # several chunks that writes was checked by a dry pass, so its analyzer
                    # is never full and nothing is written before a refusal)
                    with m.If(check.done & ((check.error != 0) | dry & an.full)):
                        m.d.comb += an.finish.eq(1)
                        m.next = "PART_WAIT_ANALYZER"
                    with m.Elif(check.done):
                        m.d.comb += an.chunk_end.eq(1)
                        m.next = "CHUNK_WAIT"
                with m.Else():
                    m.d.comb += an.finish.eq(1)
                    m.d.sync += sharing.eq(0)
                    m.next = "PART_WAIT_ANALYZER"

            with m.State("CHUNK_WAIT"):         # a chunk's pairs are out: the pass's next chunk
                with m.If(~dry):                # (its members, into the merge)
                    stream_gradients()
                with m.If(an.chunk_done & ~coef.busy):
                    m.d.sync += [b0.eq(b0 + nb), chunk_cont.eq(1)]
                    m.next = "PART_START"

            with m.State("PART_WAIT_ANALYZER"):
                # (the merge goes on; the update list, which fetches and writes, waits)
                with m.If(merging & ~mem_.upd):
                    stream_gradients()
                with m.If(baseline):
                    stream_lookups()
                # a refused batch: drop the analysis (and the merge); the job ends, nothing written
                with m.If(an.inserted & ~check.done):
                    pass                        # nothing may be written before the verdict
                with m.Elif(an.inserted & (check.error != 0)):
                    m.d.sync += error.eq(check.error)
                    with m.If(baseline & forward):  # (the stream begun runs out, nothing written)
                        m.next = "RUN_BASELINE"
                    with m.Elif(baseline):
                        m.next = "RUN_BASELINE_UPDATE"
                    with m.Elif(merging):
                        m.next = "MERGE_DRAIN"
                    with m.Else():
                        m.next = "DRY_DRAIN"
                with m.Elif(an.inserted & (dry | by_rows & an.full)):
                    with m.If(by_rows & an.full):
                        m.d.sync += error.eq(ErrorCode.ROW_GROUP_TOO_LARGE)
                    with m.If(merging):
                        m.next = "MERGE_DRAIN"
                    with m.Else():
                        m.next = "DRY_DRAIN"
                with m.Elif(an.inserted):
                    with m.If(an.full):
                        m.d.sync += nb.eq(an.full_bag)
                    m.d.sync += [bi.eq(0), len_state.eq(0)]
                    with m.If(forward & ~baseline):     # each bag's result as soon as it is complete
                        start_merge(early=C(1, 1))
                    with m.If(~baseline):       # (baseline's stream is under way)
                        m.d.sync += [k.eq(0), end_sent.eq(0), prev_state_valid.eq(0)]
                    with m.If(forward & baseline):
                        m.next = "RUN_BASELINE"
                    with m.Elif(forward):
                        m.next = "RUN_MEMBERS"
                    with m.Elif(baseline):
                        m.next = "RUN_BASELINE_UPDATE"
                    with m.Else():
                        m.next = "RUN_GRADIENTS"

            with m.State("DRY_DRAIN"):          # the analyzer's output is not needed
                # (nor the rows discovered, nor weights left by a part cut short by an error)
                m.d.comb += [coef.o.ready.eq(1), dropping.eq(1), wts.data.ready.eq(1)]
                with m.If(~an.busy & ~coef.busy & (row_q.level == 0) & all_arrived & ~wts.busy):
                    with m.If(error != 0):
                        m.next = "IDLE"
                    with m.Else():              # (a row group checked)
                        next_group()
                        m.next = "PART_START"

            with m.State("MERGE_DRAIN"):        # a refused batch, the merge begun: it ends, no result kept
                # (the rows not yet fetched are not needed, nor the update list, nor weights
                # left by a part cut short; the merge's results are dropped, below)
                m.d.comb += [dropping.eq(1), wts.data.ready.eq(1)]
                with m.If(mem_.upd):
                    m.d.comb += coef.o.ready.eq(1)
                with m.Else():
                    stream_gradients()
                with m.If(~end_sent & ~an.busy & ~coef.busy & (item_q.level == 0)):
                    m.d.comb += sch.end.eq(1)
                    m.d.sync += end_sent.eq(1)
                with m.If(end_sent & pipeline_idle & ~an.busy & all_arrived & ~wts.busy):
                    m.d.sync += merging.eq(0)
                    m.next = "IDLE"

            # ---- 3. items into the scheduler, rows into the datapath --------------------
            # (members come through the coefficient stage: item.c and item.repeat are set
            # below, outside the state machine)
            with m.State("RUN_MEMBERS"):        # forward: each distinct row once, row order
                m.d.comb += [issue.eq(coef.o.valid), need_item.eq(1), need_want.eq(mem_.first),
                             item_row.eq(mem_.row), item_slot.eq(mem_.slot), coef.o.ready.eq(taken),
                             item.item.eq(mem_.slot), item.member.eq(mem_.bag), item.first.eq(mem_.first),
                             item.member_last.eq(mem_.member_last)]
                with m.If(~an.busy & ~coef.busy & (item_q.level == 0)):
                    m.d.comb += sch.end.eq(1)
                    m.next = "PART_FINISH"

            with m.State("RUN_BASELINE"):       # forward: every lookup an item, its own row read
                # (bags interleaved by the lookup buffer, each in index order)
                stream_lookups()
                with m.If(~lbuf.busy & (item_q.level == 0)):
                    m.d.comb += sch.end.eq(1)
                    m.next = "PART_FINISH"

            with m.State("RUN_GRADIENTS"):      # backward: gradient rows and the update list
                stream_gradients()
                # every gradient row is in: the scheduler may send the merged gradients
                items_in = (coef.o.valid & mem_.upd & adagrad) | ~an.busy & ~coef.busy
                with m.If(~end_sent & items_in & (item_q.level == 0)):
                    m.d.comb += sch.end.eq(1)
                    m.d.sync += end_sent.eq(1)
                with m.If(~an.busy & ~coef.busy & end_sent):
                    m.next = "PART_FINISH"

            with m.State("RUN_BASELINE_UPDATE"):    # backward: per lookup, in index order
                stream_lookups()
                with m.If(~lbuf.busy):
                    m.next = "PART_FINISH"

            with m.State("PART_FINISH"):        # results drain; updates reach memory
                with m.If(error != 0):          # (baseline's refused part: the weights of lookups
                    m.d.comb += wts.data.ready.eq(1)    # never taken, the check having failed first)
                with m.If(pipeline_idle & ~an.busy & (error != 0)):
                    with m.If(~wts.busy):
                        m.next = "IDLE"
                with m.Elif(pipeline_idle & ~an.busy):
                    m.d.sync += [cnt.parts.eq(cnt.parts + 1), cnt.distinct_rows.eq(cnt.distinct_rows + an.num_rows),
                                 merging.eq(0)]
                    with m.If(by_rows):
                        next_group()
                    with m.Else():
                        m.d.sync += b0.eq(b0 + nb)
                    m.next = "PART_START"

        # Cycles per phase.  The check overlaps the first part's analysis; only the cycles the
        # job waits for its verdict count as checking.
        ongoing = lambda *states: Cat(*[fsm.ongoing(s) for s in states]).any()
        waiting_check = ~check.done & (ongoing("CHECK_CONFIG")
                                       | fsm.ongoing("PART_WAIT_ANALYZER") & an.inserted
                                       | fsm.ongoing("PART_ANALYZE") & chunk_waits
                                       | fsm.ongoing("PART_START") & (t == T))
        count(cnt.cycles_check, ongoing("CHECK_CONFIG", *(["STALE_LOAD"] if self.stale.enabled else []))
              | waiting_check)
        if self.stale.enabled:                  # (within cycles_check)
            count(cnt.stale_load_cycles, fsm.ongoing("STALE_LOAD"))
        count(cnt.cycles_analysis, (ongoing("PART_START", "PART_OFFSETS", "PART_ANALYZE", "PART_WAIT_ANALYZER",
                                            "DRY_DRAIN") | fsm.ongoing("CHUNK_WAIT") & dry) & ~waiting_check)
        count(cnt.cycles_stream, ongoing("RUN_MEMBERS", "RUN_BASELINE", "RUN_GRADIENTS", "RUN_BASELINE_UPDATE")
              | fsm.ongoing("CHUNK_WAIT") & ~dry)
        count(cnt.cycles_drain, ongoing("PART_FINISH", "MERGE_DRAIN"))
        m.d.comb += [flush_writes.eq(fsm.ongoing("PART_FINISH")), merge_dropped.eq(fsm.ongoing("MERGE_DRAIN"))]
        return m
