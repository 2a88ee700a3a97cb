"""Analyzer: distinct rows, (bag, row) pairs, row order and member lists of one part.

The controller streams the lookups of one part of one table, bag by bag, as
``(row, bag)`` with ``bag`` counted from the part's first bag.  The analyzer builds, on
chip and at one lookup per cycle:

* the distinct-row table: a slot per distinct row, numbered by first appearance, found
  through an open-addressing hash table (linear probing, at most half full) whose entries'
  valid bits are flip-flops, all cleared in the one cycle that starts a part (so no job
  ever waits for the table to be cleared, not even the first after reset, when the
  table's SRAM holds whatever it powered up with);
* the (bag, row) pairs, numbered in bag order, with their multiplicity and their
  coefficient ``c`` (the binary32 left fold of the pair's weights in index order, from the
  first weight: docs/design.md's key coefficient), and for each slot the number of bags holding
  it and its number of pairs;
* the row order of docs/design.md section 2 (bags holding the row descending, then row
  ascending): the sorter (:mod:`.sorter`), a stable LSD radix sort of the slots by bucket
  lists, whose first pass (the row's lowest digit) is built as the slots are created and
  whose later passes read their keys from the slot tables; about W (n + 3) cycles for n
  rows in W later passes (one for the bags holding a row, one per further digit of the
  part's rows);
* the member lists: every pair once, grouped by row in row order, a row's pairs in bag
  order.  Each slot's pairs are linked at insertion (its info keeps the head and the newest
  pair), so after the sort the lists stream out at one pair per cycle by following the
  links (the rows' infos are read ahead, so a row costs no cycle of its own).

Backward (``backward`` high at ``start``): the items are the bags (their upstream gradient
rows) and the members the distinct rows.  The controller streams one row group of a table
(backward by rows, docs/design.md section 2): only the lookups of the group's rows, in
chunks of bags that fit a part's bags and lookups, each chunk's bags numbered from 0; the
distinct-row table goes on over the chunks (``chunk_end`` ends a chunk, ``finish`` the
group).  For each chunk the analyzer keeps a list of the bags that hold
lookups (first pair, pair count), in bag order, and streams every pair once, grouped by
bag in bag order (a bag's pairs in first-appearance order; ``first`` marks a bag's first
pair; no sort), *while the chunk is being inserted*: a bag's pairs go as soon as the bag
is complete (its last lookup out of the insertion pipeline, known when the next bag's
first pair is made), on second read ports of the pair tables, so that the merge runs
beside the analysis.  At the chunk's end the last bags' pairs follow; then the analyzer
forgets the chunk's pairs and bags (a slot's newest pair carries its chunk's number, so a
bag number of a later chunk never joins it) and raises ``chunk_done``; after the group's
last chunk it streams the update list: every slot once, in slot order, with its row
(``upd`` set), or not at all with ``skip_updates`` (SGD's backward: the controller has
fetched the rows as they were discovered, see below, and pairs each merged gradient with
its row by slot; row-wise Adagrad's update list fetches the state beats).  ``member_last``
never holds backward (a member's pairs are not all known before the group's end).

Discovered rows: each new slot is announced on ``discovered`` (its slot and row) in the
cycle it is created, so that the controller can fetch the part's rows while the part is
still being analysed; ``committed`` counts the slots that stay in the part whatever comes
(those of the bags before the one being inserted, all of them once ``inserted``): a slot
at or above it may still be rolled back (see the partition rule).

Weighted bags (``weighted`` sampled at ``start``): each lookup brings its weight.  ``split``
(``dedup`` with weights, whose folds apply every occurrence's own weight) makes every
lookup a pair of its own (multiplicity 1, ``c`` = its weight); a row's pairs in one bag stay
in index order, so the member lists list the occurrences as ``dedup`` folds them.

Partition rule: when a lookup would create slot ``max_distinct_rows + 1``, the bag it
belongs to does not fit.  The analyzer stops taking lookups, rolls that bag back (its pairs
are the newest ones, its new slots the newest slots), reports ``full`` with the bag, and
drops the rest of the stream until the controller raises ``finish``.  The controller checks
the bag and lookup limits itself (it knows the offsets).

Insertion pipeline (one lookup per cycle; a hash collision stalls the input one cycle per
extra probe):

====== =====================================================================
stage  work
====== =====================================================================
0      accept ``(row, bag)``; read the hash table at ``hash(row)``
1      hit: the slot; empty: insert a new slot; other row: probe the next entry.
       Read the slot's info.
2      same bag as the slot's last pair: the pair's multiplicity grows; else a new pair.
       Read the pair's multiplicity.
3      write the multiplicity; read the coefficient, start ``fl(c + w)`` (a new pair:
       ``c = w``, not rounded, as docs/design.md folds from the first weight)
3+La   write the coefficient (``La`` = the adder's latency)
====== =====================================================================

Every read-modify-write of the slot and pair tables is one cycle apart from the next one of
the same address, so the read ports are transparent to their write ports.  The coefficient's
is ``La`` cycles apart: with ``weighted`` (and not ``split``), a lookup whose (row, bag)
matches one still in stages 1 to 3+La waits at the input (a row repeated within a bag, rare).
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fp.adder import Adder
from .params import EngineParams
from .sorter import RadixSorter, radix_walks
from .sram import rmw_memory

__all__ = ["Analyzer"]

# Bits of a chunk's number within a part (a row group's chunks: one per at most max_bags
# bags, so 2**32 bags at least before a number comes round).
CHUNK_BITS = 32


class Analyzer(wiring.Component):
    """Distinct rows, pairs and row order of one part (see the module docstring).

    Parameters
    ----------
    params : EngineParams

    Members
    -------
    start : In(1)
        Pulse in ``IDLE`` or ``DONE``: forget the previous part and take a new one.
    lookups : In(stream.Signature(row, bag))
        The part's lookups, bag by bag, in index order.
    finish : In(1)
        Pulse: the controller has sent every lookup of the part (or has seen ``full``);
        it is remembered until the part is sorted.
    chunk_end, chunk_done : In(1), Out(1)
        Backward: the pulse after a chunk's last lookup (more chunks of the part follow);
        ``chunk_done`` rises once the chunk's member lists are out (or, after ``full`` or
        with ``partition_only``, at once) and the next chunk's lookups are taken, and falls
        with the next ``chunk_end``, ``finish`` or ``start``.
    busy : Out(1)
        Between ``start`` and the last member taken.
    inserted : Out(1)
        The part's lookups are all in (``full`` and the counts are final).
    full, full_bag : Out(1), Out(bag_bits)
        The part closed before bag ``full_bag`` (the distinct-row limit).
    num_rows, num_pairs, num_lookups : Out
        Distinct rows, (bag, row) pairs and lookups taken, of the bags that stayed.
    weighted, split : In(1)
        Sampled with ``start``: the lookups' weights count (else ``c`` is not used and no
        lookup waits); every lookup is its own pair (see above).
    backward, skip_updates : In(1)
        Sampled with ``start``: order the part (a row group) for the backward pass (see
        above); the update list last or not at all.
    partition_only : In(1)
        Sampled with ``start``: only the part's extent is wanted (``full``, the counts):
        no sort and no member lists; ``busy`` falls with ``inserted``.
    discovered : Out({valid, slot, row})
        A new slot, for one cycle (not held: the consumer takes it or loses it).
    committed : Out(slot_bits + 1)
        Slots that no rollback can remove (see above).
    bags_kept : Out(bag_count_bits)
        Bags (numbered from the part's first) that no rollback can remove: those before the
        bag being inserted; once ``inserted``, every bag before ``full_bag`` (all of them
        without ``full``: then all ones).  ``baseline`` streams a bag once it is kept.
    members : Out(stream.Signature(slot, row, bags, bag, mult, c, first, upd, member_last))
        After sorting, every (bag, row) pair once (with its multiplicity and coefficient), grouped by row in row order, a row's
        pairs by bag ascending; ``first`` marks a row's first pair, ``bags`` its pair count.
        Backward: grouped by bag in bag order, as the bags complete, and the update list
        (``upd``) last.  One pair per cycle while taken.  ``member_last`` (forward) marks
        the last pair of its bag, after which the bag's fold is complete.
    """

    def __init__(self, params):
        if not isinstance(params, EngineParams):
            raise TypeError(f"Analyzer params must be an EngineParams, not {params!r}")
        self.params = p = params
        # Sort key (high, low): (bags holding the row, row), forward only.
        self.key_low_bits = max(p.index_width, p.slot_bits)
        self.key_high_bits = p.bag_count_bits
        self.key_bits = self.key_low_bits + self.key_high_bits
        self.walks = radix_walks(self.key_low_bits, self.key_high_bits, p.radix_bits)   # (the sorter's)
        self.Lookup = data.StructLayout({"row": p.index_width, "bag": p.bag_bits, "weight": 32})
        entry = {"slot": p.slot_bits, "row": p.index_width, "bags": p.bag_count_bits, "bag": p.bag_bits,
                 "mult": p.mult_bits, "c": 32, "first": 1, "upd": 1}
        self.Entry = data.StructLayout(entry)       # a pair before its countdown
        self.Member = data.StructLayout({**entry, "member_last": 1})
        super().__init__({
            "start": In(1),
            "backward": In(1),
            "skip_updates": In(1),
            "partition_only": In(1),
            "weighted": In(1),
            "split": In(1),
            "lookups": In(stream.Signature(self.Lookup)),
            "finish": In(1),
            "busy": Out(1),
            "inserted": Out(1),
            "full": Out(1),
            "full_bag": Out(p.bag_bits),
            "chunk_end": In(1),
            "chunk_done": Out(1),
            "num_rows": Out(p.slot_bits + 1),
            "num_pairs": Out(p.pair_bits + 1),
            "num_lookups": Out(p.pair_bits + 1),
            "members": Out(stream.Signature(self.Member)),
            "discovered": Out(data.StructLayout({"valid": 1, "slot": p.slot_bits, "row": p.index_width})),
            "committed": Out(p.slot_bits + 1),
            "bags_kept": Out(p.bag_count_bits),
        })

    def _hash(self, row):
        """Fold the row bits onto the table's address bits by XOR."""
        abits = (self.params.hash_depth - 1).bit_length()
        chunks = [row[i:i + abits] for i in range(0, len(row), abits)]
        h = chunks[0]
        for c in chunks[1:]:
            h = h ^ c
        return h[:abits]

    def elaborate(self, platform):
        m = Module()
        p = self.params
        H = p.hash_depth
        HashEntry = data.StructLayout({"row": p.index_width, "slot": p.slot_bits})
        bag_bits, bag_count_bits = p.bag_bits, p.bag_count_bits      # (the part's bags)
        SlotInfo = data.StructLayout({"first_bag": bag_bits, "last_bag": bag_bits, "chunk": CHUNK_BITS,
                                      "head": p.pair_bits, "pair": p.pair_bits, "bags": bag_count_bits,
                                      "pairs": p.pair_bits + 1})
        BagEntry = data.StructLayout({"bag": bag_bits, "start": p.pair_bits, "pairs": p.mult_bits})

        mem = lambda name, shape, depth, reads=1: rmw_memory(m, name, shape, depth, reads)
        hash_rd, hash_wr = mem("hash", HashEntry, H)
        row_rd, row_wr = mem("slot_row", p.index_width, p.slot_capacity)
        info_rd, info_wr = mem("slot_info", SlotInfo, p.slot_capacity)
        # (the pairs' slot, multiplicity and coefficient have a second read port: backward
        # streams a bag's pairs while the insertion goes on reading the newest ones)
        (pslot_rd, eslot_rd), pslot_wr = mem("pair_slot", p.slot_bits, p.max_lookups, 2)
        pbag_rd, pbag_wr = mem("pair_bag", bag_bits, p.max_lookups)
        (pmul_rd, emul_rd), pmul_wr = mem("pair_mult", p.mult_bits, p.max_lookups, 2)
        (pc_rd, ec_rd), pc_wr = mem("pair_c", 32, p.max_lookups, 2)
        # Member lists: each slot's pairs linked in pair (bag) order, from its info's head.
        next_rd, next_wr = mem("pair_next", p.pair_bits, p.max_lookups)
        # Backward: the bags that hold pairs, in bag order.
        bl_rd, bl_wr = mem("bag_list", BagEntry, p.max_bags)
        # Forward: the pairs of each bag not yet streamed, set beside every write of the bag
        # list's pair count, counted down as the pairs stream out (``member_last``).
        left_rd, left_wr = mem("member_left", p.pair_bits + 1, p.max_bags)

        # The hash entries' valid bits (flip-flops: H of them, cleared in one cycle) and the
        # bit of the entry read last cycle (transparent for a write in the read's cycle, as
        # the entry's SRAM read port is).
        hash_valid = Signal(H)
        entry_valid = Signal()
        m.d.sync += entry_valid.eq(hash_valid.bit_select(hash_rd.addr, 1)
                                   | hash_wr.en & (hash_wr.addr == hash_rd.addr))
        bwd, weighted, split = Signal(), Signal(), Signal()
        skip_updates, partition_only = Signal(), Signal()
        nbl = Signal(bag_count_bits)            # entries of the bag list
        cur_bl = Signal(BagEntry)               # the newest entry
        bl_fixed = Signal()
        nslots = Signal.like(self.num_rows)
        row_or = Signal(p.index_width)          # OR of the part's rows (a bound on each)
        npairs = Signal.like(self.num_pairs)
        nlookups = Signal.like(self.num_lookups)
        m.d.comb += [self.num_rows.eq(nslots), self.num_pairs.eq(npairs),
                     self.num_lookups.eq(nlookups)]
        # Slots of the bags before the newest one inserted (the newest may be rolled back).
        committed, newest_bag = Signal.like(self.committed), Signal(bag_bits)
        m.d.comb += [self.committed.eq(Mux(self.inserted, nslots, committed)),
                     self.bags_kept.eq(Mux(self.inserted, Mux(self.full, self.full_bag, (1 << bag_count_bits) - 1),
                                           Mux(nlookups == 0, 0, newest_bag)))]

        # ---- insertion pipeline ----------------------------------------------------------
        # Stage 1 runs in the INSERT state only; stages 2 and 3 finish whatever is in flight
        # in any state (their valid bits are clear otherwise).
        s1_valid, s1_row, s1_bag = Signal(), Signal(p.index_width), Signal(bag_bits)
        s1_w = Signal(32)
        s1_addr = Signal(range(H))
        s2_valid, s2_new, s2_slot, s2_bag = Signal(), Signal(), Signal(p.slot_bits), Signal(bag_bits)
        s2_row, s2_w = Signal(p.index_width), Signal(32)
        s3_valid, s3_newpair, s3_pair = Signal(), Signal(), Signal(p.pair_bits)
        s3_row, s3_bag, s3_w = Signal(p.index_width), Signal(bag_bits), Signal(32)

        info = info_rd.data
        chunk = Signal(CHUNK_BITS)              # the chunk of the part (backward by rows)
        chunk_slots = Signal.like(nslots)       # slots of the part before the chunk
        same_bag = s2_valid & ~s2_new & (info.last_bag == s2_bag) & (info.chunk == chunk)
        same = same_bag & ~split                # the lookup joins the slot's newest pair
        newpair = s2_valid & ~same
        pair = Mux(same, info.pair, npairs)
        with m.If(newpair):
            m.d.comb += [
                info_wr.addr.eq(s2_slot), info_wr.en.eq(1),
                info_wr.data.first_bag.eq(Mux(s2_new, s2_bag, info.first_bag)),
                info_wr.data.last_bag.eq(s2_bag), info_wr.data.pair.eq(npairs), info_wr.data.chunk.eq(chunk),
                info_wr.data.head.eq(Mux(s2_new, npairs, info.head)),
                info_wr.data.bags.eq(Mux(s2_new, 1, info.bags + ~same_bag)),
                info_wr.data.pairs.eq(Mux(s2_new, 1, info.pairs + 1)),
                pslot_wr.addr.eq(npairs), pslot_wr.data.eq(s2_slot), pslot_wr.en.eq(1),
                pbag_wr.addr.eq(npairs), pbag_wr.data.eq(s2_bag), pbag_wr.en.eq(1),
            ]
            m.d.sync += npairs.eq(npairs + 1)
            with m.If(~s2_new):                 # the slot's list grows at its tail
                m.d.comb += [next_wr.addr.eq(info.pair), next_wr.data.eq(npairs), next_wr.en.eq(1)]
            # bag list: a new entry at a bag's first pair, else the newest entry grows
            new_bag = (nbl == 0) | (cur_bl.bag != s2_bag)
            entry = Signal(BagEntry)
            m.d.comb += [entry.bag.eq(s2_bag), entry.start.eq(Mux(new_bag, npairs, cur_bl.start)),
                         entry.pairs.eq(Mux(new_bag, 1, cur_bl.pairs + 1)),
                         bl_wr.addr.eq(Mux(new_bag, nbl, nbl - 1)), bl_wr.data.eq(entry), bl_wr.en.eq(1)]
            m.d.sync += [cur_bl.eq(entry), nbl.eq(nbl + new_bag)]
        m.d.sync += [s2_valid.eq(0), s3_valid.eq(s2_valid), s3_newpair.eq(newpair), s3_pair.eq(pair),
                     s3_row.eq(s2_row), s3_bag.eq(s2_bag), s3_w.eq(s2_w)]
        with m.If(s3_valid):
            m.d.comb += [pmul_wr.addr.eq(s3_pair), pmul_wr.en.eq(1),
                         pmul_wr.data.eq(Mux(s3_newpair, 1, pmul_rd.data + 1))]
        # The coefficient: fl(c + w) through the adder; a new pair's c = w waits beside it, so
        # that every coefficient is written from the one end of the pipeline.
        m.submodules.c_adder = cadd = Adder()
        La = cadd.latency
        m.d.comb += [cadd.i.valid.eq(s3_valid & ~s3_newpair), cadd.i.payload.a.eq(pc_rd.data),
                     cadd.i.payload.b.eq(s3_w), cadd.o.ready.eq(1)]
        CTag = data.StructLayout({"valid": 1, "new": 1, "pair": p.pair_bits, "w": 32,
                                  "row": p.index_width, "bag": bag_bits})
        ctag = [Signal(CTag, name=f"ctag{k}") for k in range(La + 1)]
        m.d.comb += [ctag[0].valid.eq(s3_valid), ctag[0].new.eq(s3_newpair), ctag[0].pair.eq(s3_pair),
                     ctag[0].w.eq(s3_w), ctag[0].row.eq(s3_row), ctag[0].bag.eq(s3_bag)]
        for k in range(1, La + 1):
            m.d.sync += ctag[k].eq(ctag[k - 1])
        done = ctag[La]
        with m.If(done.valid):
            m.d.comb += [pc_wr.addr.eq(done.pair), pc_wr.en.eq(1),
                         pc_wr.data.eq(Mux(done.new, done.w, cadd.o.payload))]
        drained = ~s1_valid & ~s2_valid & ~s3_valid & ~Cat(*[t.valid for t in ctag[1:]]).any()
        with m.If(~bwd):
            m.d.comb += [left_wr.addr.eq(bl_wr.data.bag), left_wr.data.eq(bl_wr.data.pairs),
                         left_wr.en.eq(bl_wr.en)]

        def in_flight(row, bag):
            """(row, bag) is a lookup whose coefficient is not yet written."""
            stages = [(s1_valid, s1_row, s1_bag), (s2_valid, s2_row, s2_bag)] + \
                     [(t.valid, t.row, t.bag) for t in ctag[:La]]
            return Cat(*[v & (r == row) & (b == bag) for v, r, b in stages]).any()

        # Pair table read address: stage 2 (the multiplicity) or the phase that owns it.
        pair_addr = Signal(p.pair_bits)
        m.d.comb += [pair_addr.eq(pair),
                     pslot_rd.addr.eq(pair_addr), pbag_rd.addr.eq(pair_addr), pmul_rd.addr.eq(pair_addr),
                     pc_rd.addr.eq(pair_addr)]

        # ---- the sort (:mod:`.sorter`) ----------------------------------------------------
        # The slots by (bags holding the row descending, row ascending).  Bounds of the
        # key's halves let the sorter skip passes: every row <= the OR of the part's rows,
        # bags holding a row <= nbl.
        m.submodules.sorter = sorter = RadixSorter(p.slot_capacity, self.key_low_bits, self.key_high_bits,
                                                   p.radix_bits)
        m.d.comb += [sorter.n.eq(nslots), sorter.low_max.eq(row_or), sorter.high_max.eq(nbl),
                     sorter.key_low.eq(row_rd.data), sorter.key_high.eq(info.bags)]
        with m.If(sorter.key_read):
            m.d.comb += [row_rd.addr.eq(sorter.key_addr), info_rd.addr.eq(sorter.key_addr)]
        idx = Signal(p.slot_bits + 1)           # walks the sorted rows, the slots
        eidx = Signal(bag_count_bits + 1)       # backward: the next entry of the bag list to stream

        # ---- member lists ----------------------------------------------------------------
        # The rows in row order (the sorted permutation), each row's pairs by following its
        # links from the head, one pair a cycle, through a FIFO that absorbs the read
        # latency, so that a stalled consumer loses nothing.  A feeder reads the rows' infos
        # ahead (perm[k], then the slot's info) into a small queue, so that the walk moves
        # from a row's last pair to the next row's first in the next cycle.
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(width=self.Member.size, depth=8)
        m.d.comb += [self.members.valid.eq(out_fifo.r_rdy), self.members.payload.eq(out_fifo.r_data),
                     out_fifo.r_en.eq(self.members.ready)]
        # Every entry passes the countdown stage (cd) before the FIFO: its member's pairs
        # left are read, decremented and written back (a read one cycle behind sees it).
        cd_valid, cd_entry = Signal(), Signal(self.Entry)
        queued = Signal(range(out_fifo.depth + 2))      # in the FIFO or entering it
        m.d.comb += queued.eq(out_fifo.level + cd_valid)
        walk_slot, walk_bags = Signal(p.slot_bits), Signal(bag_count_bits)
        walk_cursor, walk_left = Signal(p.pair_bits), Signal(p.pair_bits + 1)
        walk_chained, walk_first = Signal(), Signal()   # the cursor is next_rd's data; a row's first pair
        wa_valid, wa_first = Signal(), Signal()         # a pair's tables and row are readable
        emitting = Signal()                             # the EMIT state
        RowEntry = data.StructLayout({"slot": p.slot_bits, "head": p.pair_bits, "bags": bag_count_bits,
                                      "pairs": p.pair_bits + 1})
        # (a row read ahead takes 4 cycles to be readable: 4 entries let a gap in at a
        # measured 1 row in 64 of one pair each; 6 keep up)
        m.submodules.row_q = row_q = fifo.SyncFIFOBuffered(width=RowEntry.size, depth=6)
        fa_valid, fb_valid, fb_slot = Signal(), Signal(), Signal(p.slot_bits)   # perm, then info, read
        feeding = (idx != nslots) | fa_valid | fb_valid
        feed = emitting & (idx != nslots) & (row_q.level + fa_valid + fb_valid < row_q.depth)
        m.d.sync += [fa_valid.eq(feed), fb_valid.eq(fa_valid), fb_slot.eq(sorter.order)]
        with m.If(feed):
            m.d.comb += sorter.order_next.eq(1)
            m.d.sync += idx.eq(idx + 1)
        with m.If(fa_valid):
            m.d.comb += info_rd.addr.eq(sorter.order)
        fed = Signal(RowEntry)
        m.d.comb += [fed.slot.eq(fb_slot), fed.head.eq(info.head), fed.bags.eq(info.bags), fed.pairs.eq(info.pairs),
                     row_q.w_en.eq(fb_valid), row_q.w_data.eq(fed)]
        # The walk: a pair a cycle while the output has room; a row's links are read one a cycle.
        next_row = Signal(RowEntry)
        m.d.comb += next_row.eq(row_q.r_data)
        load = emitting & (walk_left == 0) & row_q.r_rdy
        cur = Mux(load, next_row.head, Mux(walk_chained, next_rd.data, walk_cursor))
        issue = emitting & (Mux(load, next_row.pairs, walk_left) != 0) & (queued + wa_valid < out_fifo.depth - 1)
        m.d.sync += wa_valid.eq(issue)
        with m.If(emitting):
            m.d.comb += [pair_addr.eq(cur), next_rd.addr.eq(cur), row_rd.addr.eq(Mux(load, next_row.slot, walk_slot))]
            m.d.sync += [walk_chained.eq(issue), walk_cursor.eq(cur), wa_first.eq(issue & (load | walk_first))]
        with m.If(load):
            m.d.comb += row_q.r_en.eq(1)
            m.d.sync += [walk_slot.eq(next_row.slot), walk_bags.eq(next_row.bags),
                         walk_left.eq(next_row.pairs - issue), walk_first.eq(~issue)]
        with m.Elif(issue):
            m.d.sync += [walk_left.eq(walk_left - 1), walk_first.eq(0)]

        rb_slot = Signal(p.slot_bits)
        cursor, left = Signal(p.pair_bits), Signal(p.mult_bits)
        item_bag, first_pending = Signal(bag_bits), Signal()
        bb_valid, bb_first, bb_bag = Signal(), Signal(), Signal(bag_bits)
        bc_valid, bc_first, bc_bag = Signal(), Signal(), Signal(bag_bits)
        bc_slot, bc_mult, bc_c = Signal(p.slot_bits), Signal(p.mult_bits), Signal(32)
        rr_valid, rr_slot = Signal(), Signal(p.slot_bits)
        m.d.sync += [rr_valid.eq(0), bb_valid.eq(0)]     # set in BW_ROWS and by the emitter only
        finishing = Signal()
        with m.If(self.finish):
            m.d.sync += finishing.eq(1)
        # Backward by rows: a chunk ends (remembered until its lookups are in).
        chunk_ending = Signal()
        emit_done = Signal()                    # backward: every pair of the bag list is out
        restart_emit = Signal()                 # backward: a new bag list (a part, a chunk)
        with m.If(self.chunk_end):
            m.d.sync += [chunk_ending.eq(1), self.chunk_done.eq(0)]
        with m.If(self.finish):
            m.d.sync += self.chunk_done.eq(0)
        m.d.comb += self.busy.eq(1)

        def after_insertion():
            # Only the part's extent wanted (baseline, the check that a row group fits): no
            # order, no lists.  Backward needs no sort: the bag list is in bag order.
            with m.If(partition_only):
                m.d.sync += self.inserted.eq(1)
                m.next = "DONE"
            with m.Elif(bwd):                   # (the pairs stream as the bags complete)
                m.d.sync += self.inserted.eq(1)
                m.next = "BW_FLUSH"
            with m.Else():
                m.d.comb += sorter.start.eq(1)
                m.next = "SORT"

        def take_start():
            # (a finish may come in the very next cycle: an empty part)
            with m.If(self.start):
                m.d.sync += [bwd.eq(self.backward), finishing.eq(0), chunk_ending.eq(0), self.chunk_done.eq(0),
                             weighted.eq(self.weighted), split.eq(self.split),
                             skip_updates.eq(self.skip_updates),
                             partition_only.eq(self.partition_only),
                             self.inserted.eq(0), committed.eq(0)]
                m.next = "NEW_PART"

        with m.FSM(name="phase") as phase:
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                take_start()

            with m.State("NEW_PART"):
                m.d.sync += [nslots.eq(0), npairs.eq(0), nlookups.eq(0), self.full.eq(0), row_or.eq(0),
                             nbl.eq(0), bl_fixed.eq(0), committed.eq(0), chunk.eq(0), chunk_slots.eq(0),
                             s1_valid.eq(0), idx.eq(0), self.inserted.eq(0), hash_valid.eq(0)]
                m.d.comb += [restart_emit.eq(1), sorter.clear.eq(1)]
                m.next = "INSERT"

            with m.State("INSERT"):
                entry = hash_rd.data
                hit = s1_valid & entry_valid & (entry.row == s1_row)
                empty = s1_valid & ~entry_valid
                collide = s1_valid & ~hit & ~empty
                overflow = empty & (nslots == p.max_distinct_rows)
                insert = empty & ~overflow
                slot = Mux(hit, entry.slot, nslots)
                advance = ~collide & ~overflow
                hazard = weighted & ~split & in_flight(self.lookups.payload.row, self.lookups.payload.bag)
                m.d.comb += [
                    self.lookups.ready.eq(advance & ~hazard),
                    hash_rd.addr.eq(Mux(collide, s1_addr + 1, self._hash(self.lookups.payload.row))),
                    info_rd.addr.eq(slot),
                ]
                with m.If(collide):
                    m.d.sync += s1_addr.eq(s1_addr + 1)
                with m.Elif(advance):
                    m.d.sync += [s1_valid.eq(self.lookups.valid & ~hazard), s1_row.eq(self.lookups.payload.row),
                                 s1_bag.eq(self.lookups.payload.bag), s1_w.eq(self.lookups.payload.weight),
                                 s1_addr.eq(self._hash(self.lookups.payload.row))]
                with m.If(insert):
                    m.d.comb += [hash_wr.addr.eq(s1_addr), hash_wr.en.eq(1),
                                 hash_wr.data.row.eq(s1_row), hash_wr.data.slot.eq(nslots),
                                 row_wr.addr.eq(nslots), row_wr.data.eq(s1_row), row_wr.en.eq(1)]
                    m.d.sync += [nslots.eq(nslots + 1), row_or.eq(row_or | s1_row),
                                 hash_valid.eq(hash_valid | (C(1, 1) << s1_addr))]
                    m.d.comb += [self.discovered.valid.eq(1), self.discovered.slot.eq(nslots),
                                 self.discovered.row.eq(s1_row),
                                 sorter.add.eq(1), sorter.add_elem.eq(nslots), sorter.add_low.eq(s1_row)]
                with m.If(hit | insert):
                    with m.If((nlookups == 0) | (s1_bag != newest_bag)):    # the bags before are whole
                        m.d.sync += [committed.eq(nslots), newest_bag.eq(s1_bag)]
                    m.d.sync += [s2_valid.eq(1), s2_new.eq(insert), s2_slot.eq(slot), s2_bag.eq(s1_bag),
                                 s2_row.eq(s1_row), s2_w.eq(s1_w), nlookups.eq(nlookups + 1)]
                with m.If(overflow):
                    m.d.sync += [self.full.eq(1), self.full_bag.eq(s1_bag), s1_valid.eq(0)]
                    m.next = "DRAIN"
                with m.Elif((self.finish | finishing) & ~self.lookups.valid & drained):
                    after_insertion()
                with m.Elif((self.chunk_end | chunk_ending) & ~self.lookups.valid & drained):
                    with m.If(partition_only):
                        m.next = "CHUNK_NEXT"
                    with m.Else():              # the chunk's last pairs (no update list yet)
                        m.d.sync += committed.eq(nslots)
                        m.next = "CHUNK_FLUSH"

            # A row group's next chunk: its pairs and bags start afresh, the slots go on.
            with m.State("CHUNK_NEXT"):
                m.d.sync += [npairs.eq(0), nbl.eq(0), bl_fixed.eq(0), chunk.eq(chunk + 1), chunk_slots.eq(nslots),
                             committed.eq(nslots), chunk_ending.eq(0), self.chunk_done.eq(1)]
                m.d.comb += restart_emit.eq(1)
                m.next = "INSERT"

            with m.State("DRAIN"):              # let stages 2 and 3 finish; drop new lookups
                m.d.comb += self.lookups.ready.eq(1)
                with m.If(drained):
                    m.next = "ROLLBACK_READ"

            # Undo the bag that did not fit: its pairs are the newest; a slot it created goes
            # (slots are numbered in order too: popping pairs newest first, each created slot
            # is the newest slot when one of its pairs is popped, and goes then), a slot it
            # shared loses its pairs and, once, the bag (``last_bag`` marks that).
            with m.State("ROLLBACK_READ"):
                m.d.comb += [self.lookups.ready.eq(1), pair_addr.eq(npairs - 1)]
                with m.If(npairs == 0):
                    m.next = "FULL"
                with m.Else():
                    m.next = "ROLLBACK_INFO"
            with m.State("ROLLBACK_INFO"):
                m.d.comb += [self.lookups.ready.eq(1), info_rd.addr.eq(pslot_rd.data)]
                m.d.sync += rb_slot.eq(pslot_rd.data)
                with m.If(pbag_rd.data != self.full_bag):
                    m.next = "FULL"
                with m.Else():
                    m.d.sync += nlookups.eq(nlookups - pmul_rd.data)
                    m.next = "ROLLBACK_FIX"
            with m.State("ROLLBACK_FIX"):
                m.d.comb += self.lookups.ready.eq(1)
                with m.If((info.first_bag == self.full_bag) & (rb_slot >= chunk_slots)):   # (its chunk's)
                    with m.If(rb_slot == nslots - 1):
                        m.d.sync += nslots.eq(nslots - 1)
                with m.Else():
                    shared = info.last_bag == self.full_bag
                    m.d.comb += [info_wr.addr.eq(rb_slot), info_wr.en.eq(1), info_wr.data.eq(info),
                                 info_wr.data.pairs.eq(info.pairs - 1),
                                 info_wr.data.bags.eq(info.bags - shared),
                                 info_wr.data.last_bag.eq(Mux(shared, self.full_bag + 1, info.last_bag))]
                m.d.sync += npairs.eq(npairs - 1)
                m.next = "ROLLBACK_READ"

            with m.State("FULL"):               # wait for the controller to stop
                m.d.comb += self.lookups.ready.eq(1)
                with m.If(~bl_fixed):           # the rolled-back bag leaves the bag list
                    m.d.sync += bl_fixed.eq(1)
                    with m.If((nbl != 0) & (cur_bl.bag == self.full_bag)):
                        m.d.sync += nbl.eq(nbl - 1)
                with m.If(self.finish | finishing):
                    after_insertion()
                with m.Elif(self.chunk_end | chunk_ending):     # (the controller stops at the end)
                    m.d.sync += [chunk_ending.eq(0), self.chunk_done.eq(1)]

            # ---- sort (the sorter) -------------------------------------------------------
            with m.State("SORT"):
                m.d.sync += self.inserted.eq(1)
                with m.If(sorter.done):
                    m.d.sync += idx.eq(0)
                    m.next = "EMIT"

            # ---- member lists: the rows in row order, each row's pairs ------------------------
            with m.State("EMIT"):
                m.d.comb += emitting.eq(1)
                with m.If(~feeding & (row_q.level == 0) & (walk_left == 0) & ~wa_valid & (queued == 0)):
                    m.next = "DONE"

            # ---- backward: the bag list's last pairs (the emitter, below); the update list --
            with m.State("CHUNK_FLUSH"):
                with m.If(emit_done):
                    m.next = "CHUNK_NEXT"
            with m.State("BW_FLUSH"):
                with m.If(emit_done & skip_updates):
                    m.next = "DONE"
                with m.Elif(emit_done):
                    m.d.sync += idx.eq(0)
                    m.next = "BW_ROWS"
            with m.State("BW_ROWS"):            # slot k -> row -> FIFO, with upd
                issue = (idx < nslots) & (queued + rr_valid < out_fifo.depth - 1)
                m.d.comb += row_rd.addr.eq(idx)
                m.d.sync += [rr_valid.eq(issue), rr_slot.eq(idx)]
                with m.If(issue):
                    m.d.sync += idx.eq(idx + 1)
                with m.If((idx == nslots) & ~rr_valid & (queued == 0)):
                    m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += self.busy.eq(0)
                take_start()

        # ---- backward: the pairs by bag in bag order, as the bags complete ----------------
        # (beside the insertion, on the pair tables' second read ports).  A bag's pairs are
        # final once its last lookup has left the insertion pipeline: the bag list's entries
        # before the newest are, ``La + 3`` cycles after the newest was made (stage 2 to the
        # coefficient's write takes ``La + 1``; two more to spare), and every entry once the
        # chunk's (the part's) lookups are in.
        # A bag rolled back (the partition rule) is the newest: never streamed.
        nbl_seen = [Signal.like(nbl, name=f"nbl_seen{k}") for k in range(La + 3)]
        m.d.sync += [nbl_seen[0].eq(nbl)] + [nbl_seen[k].eq(nbl_seen[k - 1]) for k in range(1, len(nbl_seen))]
        with m.If(restart_emit):
            m.d.sync += [x.eq(0) for x in nbl_seen] + [eidx.eq(0)]
        all_in = phase.ongoing("CHUNK_FLUSH") | phase.ongoing("BW_FLUSH")
        complete = Signal.like(nbl)
        with m.If(~bwd | partition_only):
            m.d.comb += complete.eq(0)
        with m.Elif(all_in):
            m.d.comb += complete.eq(nbl)
        with m.Elif(nbl_seen[-1] != 0):
            m.d.comb += complete.eq(nbl_seen[-1] - 1)
        # The bag list is read ahead into ``nx`` so that one bag's last pair and the next
        # one's first go out in consecutive cycles (bags of one pair: one every two cycles).
        nx, nx_valid, nx_reading = Signal(BagEntry), Signal(), Signal()
        load = (left == 0) & nx_valid           # the next bag, now
        at_cursor = Mux(load, nx.start, cursor)
        pairs_left = Mux(load, nx.pairs, left)
        issue = (pairs_left != 0) & (queued + bb_valid + bc_valid < out_fifo.depth - 1)
        m.d.comb += [eslot_rd.addr.eq(at_cursor), emul_rd.addr.eq(at_cursor), ec_rd.addr.eq(at_cursor)]
        m.d.sync += [bb_valid.eq(issue), bb_first.eq(load | first_pending), bb_bag.eq(Mux(load, nx.bag, item_bag))]
        with m.If(load):
            m.d.sync += [item_bag.eq(nx.bag), nx_valid.eq(0)]
        with m.If(issue):                       # cursor -> (slot, mult) -> row -> FIFO
            m.d.sync += [cursor.eq(at_cursor + 1), left.eq(pairs_left - 1), first_pending.eq(0)]
        with m.Elif(load):
            m.d.sync += [cursor.eq(nx.start), left.eq(nx.pairs), first_pending.eq(1)]
        m.d.sync += nx_reading.eq(0)
        with m.If(nx_reading):
            m.d.sync += [nx.eq(bl_rd.data), nx_valid.eq(1)]
        with m.If(~restart_emit & (~nx_valid | load) & ~nx_reading & (eidx < complete)):
            m.d.comb += bl_rd.addr.eq(eidx)
            m.d.sync += [eidx.eq(eidx + 1), nx_reading.eq(1)]
        m.d.comb += emit_done.eq((eidx == nbl) & ~nx_valid & ~nx_reading & (left == 0) & ~bb_valid & ~bc_valid
                                 & (queued == 0))
        # bb: the pair's slot and multiplicity are readable; bc: the slot's row is.
        with m.If(bb_valid):
            m.d.comb += row_rd.addr.eq(eslot_rd.data)
        m.d.sync += [bc_valid.eq(bb_valid), bc_slot.eq(eslot_rd.data), bc_mult.eq(emul_rd.data),
                     bc_c.eq(ec_rd.data),
                     bc_bag.eq(bb_bag), bc_first.eq(bb_first)]
        out_entry = Signal(self.Entry)
        with m.If(wa_valid):
            m.d.comb += [out_entry.slot.eq(walk_slot), out_entry.row.eq(row_rd.data), out_entry.bags.eq(walk_bags),
                         out_entry.bag.eq(pbag_rd.data), out_entry.mult.eq(pmul_rd.data), out_entry.c.eq(pc_rd.data),
                         out_entry.first.eq(wa_first)]
        with m.If(bc_valid):
            m.d.comb += [out_entry.slot.eq(bc_slot), out_entry.row.eq(row_rd.data), out_entry.bag.eq(bc_bag),
                         out_entry.mult.eq(bc_mult), out_entry.c.eq(bc_c), out_entry.first.eq(bc_first)]
        with m.If(rr_valid):
            m.d.comb += [out_entry.slot.eq(rr_slot), out_entry.row.eq(row_rd.data), out_entry.upd.eq(1)]
        # The countdown stage (forward): the pairs left of the member's bag.
        m.d.comb += left_rd.addr.eq(out_entry.bag)
        m.d.sync += [cd_valid.eq(wa_valid | bc_valid | rr_valid), cd_entry.eq(out_entry)]
        counted = cd_valid & ~bwd
        with m.If(counted):
            m.d.comb += [left_wr.addr.eq(cd_entry.bag), left_wr.data.eq(left_rd.data - 1), left_wr.en.eq(1)]
        counted_entry = Signal(self.Member)
        m.d.comb += [counted_entry.eq(Cat(cd_entry, counted & (left_rd.data == 1))),    # (member_last last)
                     out_fifo.w_data.eq(counted_entry), out_fifo.w_en.eq(cd_valid)]
        return m
