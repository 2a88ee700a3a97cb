"""Row store: the part's table rows on chip, between the row fetcher and their consumers.

Beats are written in fetch order.  They are read back either in the same order (a FIFO:
``baseline``, whose rows come in lookup order), or, with ``by_slot`` (``dedup`` and
``refree``), by ``(slot, beat)`` in whatever order the consumer needs them (forward: item
order; backward with SGD: as the merged gradients complete; row-wise Adagrad's backward:
the update list's order): the rows are fetched in slot order, so beat ``j`` of slot ``s`` is beat
``s * D/16 + j`` of the store, and it is read once it has arrived.  ``by_slot`` also keeps each slot's write-back address (``addr_wr``) and
gives it, plus the beat, with the beat's data.

The store is ``parts`` memory beats wide (a *word*: the fold datapath's wide beat), written a
memory beat at a time.  Every read gives a word (``data``) and the memory beat asked for in it
(``beat_data``); with ``wide`` (sampled at ``start``) the in-order reads step a word at a
time, so that a consumer of words (the fold datapath, forward) takes a row of D = 64 in one
cycle at 64 lanes instead of four; a consumer of memory beats (the updaters) reads
``beat_data`` a beat at a time.  A word (by slot, or in order and ``wide``) is read only once
all its beats have arrived; in order and not ``wide`` only ``beat_data`` is defined.

Capacity: ``slots * D/16`` beats (a part's distinct rows; 256 KiB at the default 1,024
rows of D = 64) and ``slots`` addresses.  Throughput: a beat in and a read (a word or a
beat) out per cycle; latency two cycles from a request (or from a word's arrival in order)
to ``out``.  Reset and ``start``: empty.
"""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .credits import queue_depth, room

__all__ = ["RowStore"]

BEAT_BITS = 512
# The output queue's places (a read's latency is one cycle; 4 places held the store to three
# reads in four cycles, which paced backward's updates and forward's rows)
OUT_DEPTH = queue_depth(1)


class RowStore(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    slots : int         rows held
    beats : int         beats per row (D/16)
    addr_bits : int     width of a memory beat address
    parts : int         memory beats in a word (a power of two dividing ``beats``; default 1)

    Members
    -------
    start : In(1)                   pulse (only when not ``busy``): empty; ``by_slot``, ``wide`` sampled
    by_slot : In(1)
    wide : In(1)                    in order: a word per read (else a memory beat)
    rows : In(stream.Signature(512))            beats in fetch order
    wanted : In(stream.Signature({slot, beat})) ``by_slot``: the beats to read, in any order
                                    (a word's reader asks for its first beat)
    addr_wr : In({slot, addr, en})  ``by_slot``: slot ``slot`` goes back to beat address ``addr``
    out : Out(stream.Signature({data, beat_data, addr}))   the word, the beat asked for in it;
                                    ``addr``: the slot's address + beat (``by_slot``)
    busy : Out(1)                   beats held to be read in order, or a read on its way out
    """

    def __init__(self, slots, beats, addr_bits, parts=1):
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1 or parts & (parts - 1) \
                or beats % parts:
            raise ValueError(f"RowStore parts must be a power of two dividing the {beats} beats "
                             f"of a row, not {parts!r}")
        self.slots, self.beats, self.addr_bits, self.parts = slots, beats, addr_bits, parts
        self.depth = slots * beats
        slot_bits = max(1, (slots - 1).bit_length())
        self.Want = data.StructLayout({"slot": slot_bits, "beat": max(1, (beats - 1).bit_length())})
        self.Out = data.StructLayout({"data": BEAT_BITS * parts, "beat_data": BEAT_BITS, "addr": addr_bits})
        super().__init__({
            "start": In(1), "by_slot": In(1), "wide": In(1),
            "rows": In(stream.Signature(BEAT_BITS)),
            "wanted": In(stream.Signature(self.Want)),
            "addr_wr": In(data.StructLayout({"slot": slot_bits, "addr": addr_bits, "en": 1})),
            "out": Out(stream.Signature(self.Out)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        N, P = self.depth, self.parts
        lg = P.bit_length() - 1                 # a beat's word: beat >> lg; its part: beat[:lg]
        m.submodules.beats = beats_mem = memory.Memory(shape=BEAT_BITS * P, depth=N // P, init=[])
        m.submodules.addrs = addrs_mem = memory.Memory(shape=self.addr_bits, depth=self.slots, init=[])
        beat_wr, beat_rd = beats_mem.write_port(granularity=BEAT_BITS), beats_mem.read_port()
        addr_wr, addr_rd = addrs_mem.write_port(), addrs_mem.read_port()
        # (a word, its beat's part and the address: the beat is picked at the output; deep
        # enough for a read a cycle, a read taking a credit until the consumer has its beat)
        Queued = data.StructLayout({"data": BEAT_BITS * P, "part": max(1, lg), "addr": self.addr_bits})
        m.submodules.out_q = out_q = fifo.SyncFIFOBuffered(width=Queued.size, depth=OUT_DEPTH)

        by_slot, wide = Signal(), Signal()
        wp, rp = Signal(range(N)), Signal(range(N))     # next beat written, read (in order)
        count = Signal(range(N + 1))    # beats written and not read (in order), written (by slot)
        in_flight, flight_beat = Signal(), Signal.like(self.wanted.payload.beat)
        flight_part = Signal(max(1, lg))
        has_room = room(out_q, in_flight)

        # Writes, in fetch order (by slot: a part's rows never wrap round).
        write = self.rows.valid & self.rows.ready
        m.d.comb += [self.rows.ready.eq(count < N),
                     beat_wr.addr.eq(wp >> lg), beat_wr.data.eq(self.rows.payload.replicate(P)),
                     beat_wr.en.eq(Mux(write, 1 << wp[:lg], 0)),
                     addr_wr.addr.eq(self.addr_wr.slot), addr_wr.data.eq(self.addr_wr.addr),
                     addr_wr.en.eq(self.addr_wr.en)]
        with m.If(write):
            m.d.sync += wp.eq(Mux(wp == N - 1, 0, wp + 1))

        # Reads: the next beat (or word) in order, or the wanted beat once its word has arrived.
        want = self.wanted.payload
        wanted_beat = want.slot * self.beats + want.beat
        word_end = (wanted_beat | (P - 1)) + 1  # the beats written once the word has arrived
        step = Mux(wide, P, 1)
        read, read_beat = Signal(), Signal(range(N))
        with m.If(by_slot):
            # (``ready`` does not depend on ``valid``: a consumer may join the two handshakes)
            m.d.comb += [self.wanted.ready.eq((word_end <= count) & has_room),
                         read.eq(self.wanted.valid & self.wanted.ready), read_beat.eq(wanted_beat),
                         addr_rd.addr.eq(want.slot)]
        with m.Else():
            m.d.comb += [read.eq((count >= step) & has_room), read_beat.eq(rp)]
            with m.If(read):
                m.d.sync += rp.eq(Mux(rp + step >= N, 0, rp + step))
        m.d.comb += [beat_rd.addr.eq(read_beat >> lg), beat_rd.en.eq(read), addr_rd.en.eq(read)]
        m.d.sync += [in_flight.eq(read), count.eq(count + write - Mux(read & ~by_slot, step, 0))]
        with m.If(read):
            m.d.sync += [flight_beat.eq(want.beat), flight_part.eq(read_beat[:lg])]
        queued = data.View(Queued, out_q.r_data)
        m.d.comb += [out_q.w_en.eq(in_flight),
                     out_q.w_data.eq(Cat(beat_rd.data, flight_part, (addr_rd.data + flight_beat)[:self.addr_bits])),
                     self.out.valid.eq(out_q.r_rdy), self.out.payload.data.eq(queued.data),
                     self.out.payload.beat_data.eq(queued.data.word_select(queued.part, BEAT_BITS) if P > 1
                                                   else queued.data),
                     self.out.payload.addr.eq(queued.addr), out_q.r_en.eq(self.out.ready)]
        with m.If(self.start):
            m.d.sync += [by_slot.eq(self.by_slot), wide.eq(self.wide), wp.eq(0), rp.eq(0), count.eq(0)]
        m.d.comb += self.busy.eq((count != 0) & ~by_slot | in_flight | (out_q.level != 0))
        return m
