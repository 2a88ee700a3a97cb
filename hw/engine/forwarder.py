"""Row forwarder: ``baseline``'s backward takes a repeated row's value from the update
before it, not from DRAM.

``baseline`` updates a row once per lookup, in index order, so a row that repeats must
see its previous update.  Waiting for that update to be written and read back costs a
round trip through the DRAM side per repeat (measured: 15 % of the backward job at 4 ranks
on MovieLens, B = 128).  Instead, each lookup still reads its row from DRAM (the mode's
traffic is unchanged: one row read per lookup), and when its row was fetched by an earlier
update still in flight (:class:`.inflight.RowsInFlight`: not yet written back), the beats
from DRAM are dropped and the earlier update's result is used, kept here from the
updater's output.  The arithmetic, and so every bit of the tables, is the same as with the
wait.

Each lookup is ``issue``-d in lookup order with its slot among the rows in flight and,
if ``forwarded``, the slot ``src`` of the update whose result it takes.  Its row beats
arrive on ``i`` in the same order and leave on ``o`` for the updater; the updater's
results come back on ``result`` in the same order.  Slot ``s`` of the value store holds
the result of the latest update with slot ``s`` to have entered the updater; it is
overwritten only by an update that enters after every lookup that was issued while ``s``
was in flight, so a lookup always finds its source (the slot table cannot hand out ``s``
again before the earlier update was written back, and updates enter in order).  A
forwarded lookup waits at ``i`` until its source's last beat is back (the updater's
latency, about 16 cycles, instead of a DRAM round trip).

Assumed of the updater: its results leave in the order its inputs came, a result beat for
each input beat, at least three cycles after it (so the slot of a result is in ``entered``
by then); of the user: every update still in the updater holds its slot in the table of
rows in flight (so ``entered`` never holds more than ``slots``).

Storage: ``slots * beats`` memory beats (8 KiB at 32 slots of D = 64) and ``slots``
ready bits.  Throughput: a beat a cycle; latency one cycle (a registered read of the
value store).  Reset: empty; nothing to clear between jobs.
"""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import counter_signal

__all__ = ["RowForwarder"]

BEAT_BITS = 512


class RowForwarder(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    slots : int     rows in flight (the depth of :class:`.inflight.RowsInFlight`)
    beats : int     beats per row (D/16)

    Members
    -------
    issue : In(stream.Signature({forwarded, src, slot}))   each lookup, in lookup order
    i : In(stream.Signature(512))           the lookups' row beats from DRAM, in order
    o : Out(stream.Signature(512))          the row beats the updater takes
    result : In(stream.Signature(512, always_ready=True))   the updater's results as they
                                            leave (a tap on its handshake)
    busy : Out(1)                           a lookup issued whose result is not back
    """

    def __init__(self, slots, beats):
        self.slots, self.beats = slots, beats
        self.Issue = data.StructLayout({"forwarded": 1, "src": range(slots), "slot": range(slots)})
        super().__init__({"issue": In(stream.Signature(self.Issue)), "i": In(stream.Signature(BEAT_BITS)),
                          "o": Out(stream.Signature(BEAT_BITS)),
                          "result": In(stream.Signature(BEAT_BITS, always_ready=True)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        beats = self.beats
        m.submodules.issued = issued = fifo.SyncFIFOBuffered(width=self.Issue.size, depth=self.slots)
        # (the updates in the updater: each holds a slot, so at most ``slots`` of them)
        m.submodules.entered = entered = fifo.SyncFIFOBuffered(width=len(self.issue.payload.slot),
                                                               depth=self.slots)
        m.submodules.values = values = memory.Memory(shape=BEAT_BITS, depth=self.slots * beats, init=[])
        wr, rd = values.write_port(), values.read_port()
        ready = Signal(self.slots)              # slot s's last result beat is in the store
        m.d.comb += [issued.w_en.eq(self.issue.valid), issued.w_data.eq(self.issue.payload),
                     self.issue.ready.eq(issued.w_rdy)]

        # In: a lookup's beats pass once its source's result is whole (then the store's
        # read replaces them); a registered stage in front of ``o``.
        look = data.View(self.Issue, issued.r_data)
        in_beat, out_beat = counter_signal(beats), counter_signal(beats)
        held, held_data, held_forwarded = Signal(), Signal(BEAT_BITS), Signal()
        first = in_beat == 0
        take = (self.i.valid & issued.r_rdy & (~look.forwarded | ready.bit_select(look.src, 1))
                & (~first | entered.w_rdy) & (~held | self.o.ready))
        m.d.comb += [self.i.ready.eq(take), rd.en.eq(take), rd.addr.eq(look.src * beats + in_beat),
                     entered.w_en.eq(take & first), entered.w_data.eq(look.slot),
                     issued.r_en.eq(take & (in_beat == beats - 1)),
                     self.o.valid.eq(held), self.o.payload.eq(Mux(held_forwarded, rd.data, held_data))]
        with m.If(take):
            m.d.sync += [in_beat.eq(Mux(in_beat == beats - 1, 0, in_beat + 1)),
                         held_data.eq(self.i.payload), held_forwarded.eq(look.forwarded)]
        with m.If(take | self.o.ready):
            m.d.sync += held.eq(take)

        # Out: the updater's results into the slot of their update.
        back = self.result.valid
        m.d.comb += [wr.en.eq(back), wr.addr.eq(entered.r_data * beats + out_beat), wr.data.eq(self.result.payload),
                     entered.r_en.eq(back & (out_beat == beats - 1))]
        with m.If(back):
            m.d.sync += out_beat.eq(Mux(out_beat == beats - 1, 0, out_beat + 1))
        # (an update's slot is not ready from its first beat in until its last beat is back;
        # the clear comes last, so it would win, though a slot is never reused that soon)
        with m.If(back & (out_beat == beats - 1)):
            m.d.sync += ready.bit_select(entered.r_data, 1).eq(1)
        with m.If(take & first):
            m.d.sync += ready.bit_select(look.slot, 1).eq(0)
        # (by the FIFOs' levels: their read side sees a write two cycles late)
        m.d.comb += self.busy.eq((issued.level != 0) | held | (entered.level != 0))
        return m
