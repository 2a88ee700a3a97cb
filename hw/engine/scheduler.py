"""Sharing scheduler: turns member lists into vector operations, one per trie node.

The stream of items (table rows in forward, gradient rows in backward) arrives in the
design's order, each item with its members (bags in forward, embedding rows in backward)
and the coefficient ``c`` of the item in each member.  The fold of every member is
``acc = +0; acc = fma(c, item, acc)`` over its items in that order.

``refree`` (share = 1): members whose folds so far are equal, because their item sequences
so far are equal, form a *class* with one partial sum.  When an item arrives, the members of
class ``q`` that hold it with coefficient ``c`` move together to a new class ``n`` whose
partial sum is ``fma(c, item, PS[q])``: one operation per trie node, which is exactly the
sharing of docs/design.md section 2 (the trie's nodes are the classes ever created).  Classes are
found through a remap table tagged with the current *sweep*; a member whose class was
already split in this sweep with another coefficient is deferred to a later sweep of the
same item (coefficients of one item never meet inside one member, so any sweep order gives
the same folds).  A class whose last member leaves is recycled.

``dedup`` (share = 0): every member is its own class (its accumulator is numbered by the
member) and takes ``repeat`` operations per item, as the per-occurrence folds of ``dedup``.

Outputs: ``ops`` (``PS[dst] = fma(c, item, PS[src] or +0)``; ``kind`` passes through, see
the datapath), then ``finals``: for members 0 .. num_members-1 the class holding their
result (``zero`` when the member holds no item: an empty bag).

Throughput: ``refree``, one member per cycle, within an item and over item boundaries.
Three stages overlap: TAKE (the member's class is read), R (the class is known: its remap
entry and count are read in the cycle the member ahead of it is decided) and DECIDE (issue
the operation of a new class, leave the old class); the decided member joins its new class
in the next cycle (MOVE).  Members of one item are distinct, so within an item no member's
class changes under it; the tables' reads see the writes of the same cycle through
(transparent ports), and the joined class's count has a read port of its own.  The next
item's first member may be the bag just decided, or one that moved after its class was
read: it takes the new class by forwarding, and the one MOVE its count missed is added.
It waits (parked) while the current item's deferred members take their rounds, then takes
the unpipelined path, as every member of a round does: a cycle to read its class's remap
entry (REMAP, where a member equal to the one moving takes its new class by forwarding),
then DECIDE.  ``dedup``, a member a cycle plus one per extra repeat (its
class is read as it is taken, its first operation issued in the next cycle, and the next
member is taken with its last one).  A member deferred by a conflict costs two cycles more.
"""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .sram import rmw_memory

__all__ = ["ShareScheduler"]

# Part and sweep tags; the tables are cleared before a tag can wrap.  A part makes at most
# two sweeps per (item, member) pair (each takes a member): a row group of backward by rows
# streams every bag of its table, so up to 2 x 2**32 (the job's indices), below 2**39.
TAG_BITS = 40


class ShareScheduler(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    num_members : int
        Capacity: members (and therefore classes) of one part.
    item_bits : int
        Width of the item identifier passed through to the operations.
    repeat_bits : int
        Width of the repeat count (dedup).
    tag_bits : int
        Width of the part and sweep tags (default :data:`TAG_BITS`; the tests wrap small ones).

    Members
    -------
    start : In(1)
        Pulse: a new part with ``num_members`` members, sharing on when ``share``, each
        member's final sent as soon as it is complete when ``early``.  Taken also during the
        clear of the class tables that follows reset (``num_members_max + 3`` cycles); the
        part's work begins when the clear ends.
    end : In(1)
        Pulse after the part's last item has been taken (also for a part with no items
        at all): the part's end.  ``num_members`` is taken again (a row group streamed in
        chunks knows its members only at its end).
    items : In(stream.Signature(item, member, c, kind, repeat, first, member_last))
        ``first`` marks an item's first member, ``member_last`` the member's last item.
    ops : Out(stream.Signature(dst, src, src_zero, item, item_first, c, kind, final))
        Operations, and finals (``final``: member ``dst``'s result is in class ``src``, or
        ``+0`` when ``src_zero``: a member without items).  With ``early``, a member's final
        follows the decision of its last item (``member_last``) and the finals of members
        without items come after the part's last operation; else every final comes there,
        in member order.
    busy : Out(1)
    """

    def __init__(self, num_members, item_bits, repeat_bits=8, kind_bits=2, tag_bits=TAG_BITS):
        for name, v in (("tag_bits", tag_bits), ("num_members", num_members), ("item_bits", item_bits),
                        ("repeat_bits", repeat_bits), ("kind_bits", kind_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ShareScheduler {name} must be a positive integer, not {v!r}")
        self.num_members_max, self.tag_bits = num_members, tag_bits
        # Classes: one per started member, plus the one being created while its member
        # still holds the old one, plus two just recycled and not yet readable from the free
        # list (a decision a cycle; the free list shows a class two cycles after it is put).
        self.num_classes = num_members + 3
        nb = max(1, (self.num_classes - 1).bit_length())
        self.node_bits = nb
        self.Item = data.StructLayout({"item": item_bits, "member": nb, "c": 32, "kind": kind_bits,
                                       "repeat": repeat_bits, "first": 1, "member_last": 1})
        self.Op = data.StructLayout({"dst": nb, "src": nb, "src_zero": 1, "item": item_bits,
                                     "item_first": 1, "c": 32, "kind": kind_bits, "final": 1})
        super().__init__({
            "start": In(1),
            "end": In(1),
            "share": In(1),
            "early": In(1),
            "num_members": In(nb + 1),
            "items": In(stream.Signature(self.Item)),
            "ops": Out(stream.Signature(self.Op)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        N, C, nb = self.num_members_max, self.num_classes, self.node_bits
        W = self.tag_bits
        Cls = data.StructLayout({"part": W, "node": nb})
        Remap = data.StructLayout({"sweep": W, "c": 32, "node": nb})

        mem = lambda name, shape, depth: rmw_memory(m, name, shape, depth)

        cls_rd, cls_wr = mem("cls", Cls, N)
        remap_rd, remap_wr = mem("remap", Remap, C)
        # A class's member count is joins - leaves (modulo 2**(nb+1)): MOVE writes the
        # joins and DECIDE the leaves, both in every cycle, each table with its own write
        # port.  A class is created with joins = leaves + 1, whatever both held before.
        joins_rd, joins_wr = mem("joins", nb + 1, C)
        leaves_rd, leaves_wr = mem("leaves", nb + 1, C)
        join_rd = m.submodules.joins.read_port(transparent_for=(joins_wr,))     # the joined class
        new_rd = m.submodules.leaves.read_port(transparent_for=(leaves_wr,))    # the created class

        def read_count(cls):
            m.d.comb += [joins_rd.addr.eq(cls), leaves_rd.addr.eq(cls)]
        count = Signal(nb + 1)                  # members of the class read last cycle
        m.d.comb += count.eq(joins_rd.data - leaves_rd.data)
        m.submodules.free = free = fifo.SyncFIFOBuffered(width=nb, depth=C)
        m.submodules.deferred = deferred = fifo.SyncFIFOBuffered(width=self.Item.size, depth=N)

        # tags cls entries (older parts read as root; the clear after reset writes 0)
        part = Signal(W)
        sweep = Signal(W)                # tags remap entries: older sweeps are misses
        root_remap = Signal(Remap)              # the root class's remap entry
        fresh = Signal(nb + 1)                  # classes never used in this part
        share = Signal()
        members = Signal(nb + 1)

        cur = Signal(self.Item)                 # the member being processed
        q, q_root = Signal(nb), Signal()
        n = Signal(nb)
        reps = Signal.like(cur.repeat)
        item_first_pending = Signal()           # next op is the first of its item
        round_left = Signal(range(N + 1))       # deferred members of the current round
        draining = Signal()
        # Deferred members waiting; counted here because the FIFO's output lags its input
        # (a member deferred in DECIDE is not yet readable in the next TAKE).
        ndef = Signal(range(N + 1))
        m.d.sync += ndef.eq(ndef + deferred.w_en - (deferred.r_en & deferred.r_rdy))
        end_seen = Signal()
        k = Signal(nb + 1)
        created = Signal()                      # the member's new class was made for it
        moving, moving_member = Signal(), Signal(nb)    # MOVE of the member decided last cycle
        # Stage R: the member taken behind the one in DECIDE (the same item); its class was
        # read when it was taken (``r_fresh``: in the last cycle, else latched in r_q).
        r_valid, r_fresh = Signal(), Signal()
        r_item = Signal(self.Item)
        r_q, r_q_root = Signal(nb), Signal()
        m.d.sync += r_fresh.eq(0)
        # (a member of the next item may be the one that moved in this cycle, after its
        # class was read: it takes the class it moved to)
        r_moved = moving & (moving_member == r_item.member)
        r_node = Mux(r_fresh, Mux(r_moved, n, cls_rd.data.node), r_q)
        r_root = Mux(r_fresh, ~r_moved & (cls_rd.data.part != part), r_q_root)
        # The member behind starts the next item, and waits (parked) while the deferred
        # members of the current item take their rounds.
        parked = Signal()
        # The member in DECIDE (an item's first, taken behind) is in the class the member
        # before it moved to in the cycle before (its own bag, or another that joined the
        # class): that MOVE is not in the count read for it.
        just_joined = Signal()
        m.d.sync += just_joined.eq(0)
        with m.If(r_fresh):
            m.d.sync += [r_q.eq(r_node), r_q_root.eq(r_root)]

        # Operations of the state machine (op) and complete members' finals (fin_q, first).
        op, op_valid, op_ready = Signal(self.Op), Signal(), Signal()
        FinalEntry = data.StructLayout({"member": nb, "node": nb})
        m.submodules.fin_q = fin_q = fifo.SyncFIFOBuffered(width=FinalEntry.size, depth=8)
        queued_final = data.View(FinalEntry, fin_q.r_data)
        fin_op = Signal(self.Op)
        m.d.comb += [fin_op.dst.eq(queued_final.member), fin_op.src.eq(queued_final.node), fin_op.final.eq(1),
                     self.ops.valid.eq(fin_q.r_rdy | op_valid),
                     self.ops.payload.eq(Mux(fin_q.r_rdy, fin_op.as_value(), op.as_value())),
                     fin_q.r_en.eq(self.ops.ready), op_ready.eq(self.ops.ready & ~fin_q.r_rdy)]
        early = Signal()
        finished = Signal(nb + 1)               # members whose final was queued early

        def finish(member, node):
            """Queue the member's final (its last item is decided)."""
            m.d.comb += [fin_q.w_en.eq(1), fin_q.w_data.eq(Cat(member, node))]
            m.d.sync += finished.eq(finished + 1)
        # the member's last item is decided only when its final has room
        finishing = early & cur.member_last
        may_finish = ~finishing | fin_q.w_rdy

        m.d.comb += self.busy.eq(1)
        with m.If(self.end):                    # (members known only at the end: a row group in chunks)
            m.d.sync += [end_seen.eq(1), members.eq(self.num_members)]
        deferred_item = data.View(self.Item, deferred.r_data)
        entry = Signal(Remap)                   # remap entry of the member's class
        m.d.comb += entry.eq(Mux(q_root, root_remap.as_value(), remap_rd.data.as_value()))

        # MOVE, in the cycle after a member's decision whatever the state: the member joins
        # its new class (the class's count was read in DECIDE when it existed; a new class
        # starts at 1).  No state writes these tables then (the next DECIDE is a cycle later).
        m.d.sync += moving.eq(0)
        with m.If(moving):
            m.d.comb += [joins_wr.addr.eq(n), joins_wr.en.eq(1),
                         joins_wr.data.eq(Mux(created, new_rd.data, join_rd.data) + 1),
                         cls_wr.addr.eq(moving_member), cls_wr.en.eq(1),
                         cls_wr.data.part.eq(part), cls_wr.data.node.eq(n)]

        begun = Signal()                        # a part taken during the clear after reset

        def begin(clear_k=True):
            """Take a new part (``start``): its parameters, a fresh part tag and sweep."""
            m.d.sync += [part.eq(part + 1), sweep.eq(sweep + 1), fresh.eq(0), parked.eq(0),
                         r_valid.eq(0),
                         share.eq(self.share), early.eq(self.early), finished.eq(0),
                         members.eq(self.num_members),
                         end_seen.eq(0), draining.eq(0), item_first_pending.eq(0), begun.eq(1)]
            if clear_k:
                m.d.sync += k.eq(0)

        # The tagged tables are cleared after reset (their SRAM holds whatever it powered up
        # with), before any part, so that no job waits for it; a part started meanwhile is
        # taken (``begun``) and starts when the clear ends.
        with m.FSM(name="scheduler", init="CLEAR"):
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(fin_q.level != 0)
                with m.If(self.start):
                    begin()
                    # Clear the tagged tables before a tag could come round again (a part
                    # makes fewer than 2**39 sweeps: see TAG_BITS).
                    with m.If((part == (1 << W) - 1) | (sweep >= 1 << (W - 1))):
                        m.d.sync += [part.eq(1), sweep.eq(1), root_remap.sweep.eq(0)]
                        m.next = "CLEAR"
                    with m.Else():
                        m.next = "FORGET_FREE"

            with m.State("FORGET_FREE"):        # the last part's recycled classes: all fresh now
                m.d.comb += free.r_en.eq(1)
                m.d.sync += begun.eq(0)
                with m.If(~free.r_rdy & (free.level == 0)):
                    m.next = "TAKE"

            with m.State("CLEAR"):
                m.d.comb += [cls_wr.addr.eq(k), cls_wr.en.eq(k < N), cls_wr.data.part.eq(0),
                             remap_wr.addr.eq(k), remap_wr.en.eq(1), remap_wr.data.sweep.eq(0)]
                m.d.sync += k.eq(k + 1)
                with m.If(self.start):          # (only after reset: a wrap's clear has begun its part)
                    begin(clear_k=False)
                with m.If(k == C - 1):
                    m.d.sync += k.eq(0)
                    with m.If(begun | self.start):
                        m.next = "FORGET_FREE"
                    with m.Else():
                        m.next = "IDLE"

            # Take the next member: a deferred one while a round is on, else a new one.  Its
            # class is read as it is taken (a member written in this cycle reads through).
            def take():
                with m.If(draining):
                    with m.If(round_left == 0):
                        with m.If(ndef != 0):           # another round of the same item
                            m.d.sync += [sweep.eq(sweep + 1), round_left.eq(ndef)]
                        with m.Else():
                            m.d.sync += draining.eq(0)
                        m.next = "TAKE"
                    with m.Elif(deferred.r_rdy):
                        m.d.comb += [deferred.r_en.eq(1), cls_rd.addr.eq(deferred_item.member)]
                        m.d.sync += [cur.eq(deferred.r_data), round_left.eq(round_left - 1)]
                        m.next = "REMAP"
                    with m.Else():
                        m.next = "TAKE"
                with m.Elif(parked):            # the next item's first member, after the rounds
                    m.d.comb += cls_rd.addr.eq(r_item.member)
                    m.d.sync += [cur.eq(r_item), parked.eq(0), sweep.eq(sweep + 1), item_first_pending.eq(1)]
                    m.next = "REMAP"
                with m.Elif(end_seen & (ndef != 0)):
                    m.d.sync += [draining.eq(1), round_left.eq(0)]  # the last item's rounds
                    m.next = "TAKE"
                with m.Elif(end_seen):
                    m.d.sync += k.eq(0)
                    m.next = "FINALS"
                with m.Elif(self.items.valid & self.items.payload.first & (ndef != 0)):
                    m.d.sync += [draining.eq(1), round_left.eq(0)]  # finish the previous item first
                    m.next = "TAKE"
                with m.Elif(self.items.valid):
                    nxt = self.items.payload
                    m.d.comb += [self.items.ready.eq(1), cls_rd.addr.eq(nxt.member)]
                    m.d.sync += cur.eq(nxt)
                    with m.If(nxt.first):
                        m.d.sync += [sweep.eq(sweep + 1), item_first_pending.eq(1)]
                    with m.If(share):
                        m.next = "REMAP"
                    with m.Else():              # (dedup: its class is read as DEDUP_OP starts)
                        m.d.sync += [n.eq(nxt.member), reps.eq(nxt.repeat)]
                        m.next = "DEDUP_OP"
                with m.Else():
                    m.next = "TAKE"

            def take_behind():
                """Take the next member into stage R (sharing, no round): the item's next
                member, or the next item's first."""
                nxt = self.items.payload
                with m.If(share & ~draining & ~end_seen & self.items.valid):
                    m.d.comb += [self.items.ready.eq(1), cls_rd.addr.eq(nxt.member)]
                    m.d.sync += [r_item.eq(nxt), r_valid.eq(1), r_fresh.eq(1)]

            with m.State("TAKE"):
                take()

            with m.State("REMAP"):              # read the class's remap entry and count
                # (the member moving this cycle is this one again: its class is the new one)
                forward = moving & (moving_member == cur.member)
                started = forward | (cls_rd.data.part == part)
                node = Mux(forward, n, cls_rd.data.node)
                m.d.sync += [q.eq(node), q_root.eq(~started)]
                m.d.comb += remap_rd.addr.eq(node)
                read_count(node)
                take_behind()
                m.next = "DECIDE"

            with m.State("DEDUP_OP"):           # PS[member] = fma(c, item, PS[member] or +0)
                # The member's class entry is read in every cycle of the state (and first as
                # it was taken); the port reads this cycle's write through, so a member's
                # first operation marks it started for its next one, or for itself taken
                # again at once (the next item's first member).  Taken with the last
                # operation, the next member issues in the next cycle: a member a cycle.
                not_started = cls_rd.data.part != part
                last_op = reps == 1
                m.d.comb += [cls_rd.addr.eq(cur.member),
                             op_valid.eq((reps != 0) & (~last_op | may_finish)), op.dst.eq(n),
                             op.src.eq(n), op.src_zero.eq(not_started),
                             op.item.eq(cur.item), op.c.eq(cur.c), op.kind.eq(cur.kind),
                             op.item_first.eq(item_first_pending)]
                with m.If(reps == 0):
                    take()
                with m.Elif(op_valid & op_ready):
                    m.d.sync += [reps.eq(reps - 1), item_first_pending.eq(0)]
                    with m.If(not_started):     # the member has started
                        m.d.comb += [cls_wr.addr.eq(n), cls_wr.en.eq(1),
                                     cls_wr.data.part.eq(part), cls_wr.data.node.eq(n)]
                    with m.If(last_op):         # its last operation: take the next member
                        with m.If(finishing):
                            finish(n, n)
                        take()

            with m.State("DECIDE"):
                hit = (entry.sweep == sweep) & (entry.c == cur.c)
                conflict = (entry.sweep == sweep) & (entry.c != cur.c)
                miss = entry.sweep != sweep
                new = Mux(free.r_rdy, free.r_data, fresh[:nb])
                commit = (hit | miss & op_ready) & may_finish
                # Hold the class's entry and count while the operation waits, or read those
                # of the member behind; on a hit, read the joined class's count for MOVE.
                advance = commit | conflict
                decided = Mux(hit, entry.node, new)             # the member's new class
                crosses = r_valid & r_item.first                # the member behind starts an item
                park = crosses & (conflict | (ndef != 0))       # ... after this item's rounds
                behind = advance & r_valid & ~park
                same = crosses & (r_item.member == cur.member)  # (an item's members are distinct)
                behind_q = Mux(same, decided, r_node)
                m.d.comb += [remap_rd.addr.eq(Mux(behind, behind_q, q)), join_rd.addr.eq(entry.node),
                             new_rd.addr.eq(new)]
                read_count(Mux(behind, behind_q, q))
                # (the class the member before moved to: its MOVE is this cycle)
                members_left = Mux(just_joined, Mux(created, 1, count + 1), count)
                m.d.comb += [op_valid.eq(miss & may_finish), op.dst.eq(new),
                             op.src.eq(q), op.src_zero.eq(q_root),
                             op.item.eq(cur.item), op.c.eq(cur.c), op.kind.eq(cur.kind),
                             op.item_first.eq(item_first_pending)]
                with m.If(conflict):
                    m.d.comb += [deferred.w_en.eq(1), deferred.w_data.eq(cur)]
                    with m.If(~r_valid):
                        m.next = "TAKE"
                with m.If(hit):
                    m.d.sync += [n.eq(entry.node), created.eq(0)]
                with m.If(miss & op_ready & may_finish):
                    m.d.sync += [n.eq(new), created.eq(1), item_first_pending.eq(0)]
                    with m.If(free.r_rdy):
                        m.d.comb += free.r_en.eq(1)
                    with m.Else():
                        m.d.sync += fresh.eq(fresh + 1)
                    with m.If(q_root):
                        m.d.sync += [root_remap.sweep.eq(sweep), root_remap.c.eq(cur.c),
                                     root_remap.node.eq(new)]
                    with m.Else():
                        m.d.comb += [remap_wr.addr.eq(q), remap_wr.en.eq(1),
                                     remap_wr.data.sweep.eq(sweep), remap_wr.data.c.eq(cur.c),
                                     remap_wr.data.node.eq(new)]
                with m.If(commit):
                    m.d.sync += [moving.eq(1), moving_member.eq(cur.member)]
                    with m.If(finishing):
                        finish(cur.member, decided)
                    # Leave the old class: one member fewer; recycle it when empty.
                    with m.If(~q_root):
                        m.d.comb += [leaves_wr.addr.eq(q), leaves_wr.en.eq(1), leaves_wr.data.eq(leaves_rd.data + 1)]
                        with m.If(members_left == 1):
                            m.d.comb += [free.w_en.eq(1), free.w_data.eq(q)]
                    with m.If(~r_valid):
                        take()
                with m.If(behind):              # the member behind is decided next
                    behind_root = ~same & r_root
                    m.d.sync += [cur.eq(r_item), q.eq(behind_q), q_root.eq(behind_root), r_valid.eq(0),
                                 just_joined.eq(crosses & ~behind_root & (behind_q == decided))]
                    with m.If(crosses):         # (after this member's item_first_pending clear)
                        m.d.sync += [sweep.eq(sweep + 1), item_first_pending.eq(1)]
                    take_behind()
                with m.If(advance & park):      # this item's deferred members first
                    m.d.sync += [r_valid.eq(0), parked.eq(1), draining.eq(1), round_left.eq(0)]
                    m.next = "TAKE"

            with m.State("FINALS"):             # each member's result class (read)
                m.d.comb += cls_rd.addr.eq(k)
                with m.If(finished == members):   # (early: every member has had its final)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "FINAL_SEND"
            with m.State("FINAL_SEND"):         # early: only the members without items
                zero = cls_rd.data.part != part
                m.d.comb += [cls_rd.addr.eq(k), op_valid.eq(~early | zero), op.final.eq(1),
                             op.dst.eq(k), op.src.eq(cls_rd.data.node), op.src_zero.eq(zero)]
                with m.If(op_ready | ~op_valid):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k + 1 == members):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FINALS"
        return m
