"""Row store: the part's table rows on chip, between the row fetcher and their consumers.

Beats are written in fetch order.  They are read back either in the same order (a FIFO:
forward, where the fold datapath takes the rows in item order; ``baseline`` and Adagrad
backward), or, with ``by_slot`` (backward with SGD in ``dedup`` and ``refree``), by
``(slot, beat)`` in whatever order the merged gradients complete: the rows are fetched in
slot order, so beat ``j`` of slot ``s`` is word ``s * D/16 + j``, and it is read once it
has arrived.  ``by_slot`` also keeps each slot's write-back address (``addr_wr``) and
gives it, plus the beat, with the beat's data.

Capacity: ``slots * D/16`` beats (a part's distinct rows; 256 KiB at the default 1,024
rows of D = 64) and ``slots`` addresses.  Throughput: a beat in and a beat out per cycle;
latency two cycles from a request (or from a beat's arrival in order) to ``out``.
Reset and ``start``: empty.
"""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RowStore"]

BEAT_BITS = 512


class RowStore(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    slots : int         rows held
    beats : int         beats per row (D/16)
    addr_bits : int     width of a memory beat address

    Members
    -------
    start : In(1)                   pulse (only when not ``busy``): empty; ``by_slot`` sampled
    by_slot : In(1)
    rows : In(stream.Signature(512))            beats in fetch order
    wanted : In(stream.Signature({slot, beat})) ``by_slot``: the beats to read, in any order
    addr_wr : In({slot, addr, en})  ``by_slot``: slot ``slot`` goes back to beat address ``addr``
    out : Out(stream.Signature({data, addr}))   ``addr``: the slot's address + beat (``by_slot``)
    busy : Out(1)                   beats held to be read in order, or a read on its way out
    """

    def __init__(self, slots, beats, addr_bits):
        self.slots, self.beats, self.addr_bits = slots, beats, addr_bits
        self.depth = slots * beats
        slot_bits = max(1, (slots - 1).bit_length())
        self.Want = data.StructLayout({"slot": slot_bits, "beat": max(1, (beats - 1).bit_length())})
        self.Out = data.StructLayout({"data": BEAT_BITS, "addr": addr_bits})
        super().__init__({
            "start": In(1), "by_slot": In(1),
            "rows": In(stream.Signature(BEAT_BITS)),
            "wanted": In(stream.Signature(self.Want)),
            "addr_wr": In(data.StructLayout({"slot": slot_bits, "addr": addr_bits, "en": 1})),
            "out": Out(stream.Signature(self.Out)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        N = self.depth
        m.submodules.beats = beats_mem = memory.Memory(shape=BEAT_BITS, depth=N, init=[])
        m.submodules.addrs = addrs_mem = memory.Memory(shape=self.addr_bits, depth=self.slots, init=[])
        beat_wr, beat_rd = beats_mem.write_port(), beats_mem.read_port()
        addr_wr, addr_rd = addrs_mem.write_port(), addrs_mem.read_port()
        m.submodules.out_q = out_q = fifo.SyncFIFOBuffered(width=self.Out.size, depth=4)

        by_slot = Signal()
        wp, rp = Signal(range(N)), Signal(range(N))     # next beat written, read (in order)
        count = Signal(range(N + 1))    # beats written and not read (in order), written (by slot)
        in_flight, flight_beat = Signal(), Signal.like(self.wanted.payload.beat)
        room = out_q.level + in_flight < out_q.depth - 1

        # Writes, in fetch order (by slot: a part's rows never wrap round).
        write = self.rows.valid & self.rows.ready
        m.d.comb += [self.rows.ready.eq(count < N),
                     beat_wr.addr.eq(wp), beat_wr.data.eq(self.rows.payload), beat_wr.en.eq(write),
                     addr_wr.addr.eq(self.addr_wr.slot), addr_wr.data.eq(self.addr_wr.addr),
                     addr_wr.en.eq(self.addr_wr.en)]
        with m.If(write):
            m.d.sync += wp.eq(Mux(wp == N - 1, 0, wp + 1))

        # Reads: the next beat in order, or the wanted beat once it has arrived.
        want = self.wanted.payload
        wanted_word = want.slot * self.beats + want.beat
        read = Signal()
        with m.If(by_slot):
            # (``ready`` does not depend on ``valid``: a consumer may join the two handshakes)
            m.d.comb += [self.wanted.ready.eq((wanted_word < count) & room),
                         read.eq(self.wanted.valid & self.wanted.ready), beat_rd.addr.eq(wanted_word),
                         addr_rd.addr.eq(want.slot)]
        with m.Else():
            m.d.comb += [read.eq((count != 0) & room), beat_rd.addr.eq(rp)]
            with m.If(read):
                m.d.sync += rp.eq(Mux(rp == N - 1, 0, rp + 1))
        m.d.comb += [beat_rd.en.eq(read), addr_rd.en.eq(read)]
        m.d.sync += [in_flight.eq(read), count.eq(count + write - (read & ~by_slot))]
        with m.If(read):
            m.d.sync += flight_beat.eq(want.beat)
        m.d.comb += [out_q.w_en.eq(in_flight),
                     out_q.w_data.eq(Cat(beat_rd.data, (addr_rd.data + flight_beat)[:self.addr_bits])),
                     self.out.valid.eq(out_q.r_rdy), self.out.payload.eq(out_q.r_data),
                     out_q.r_en.eq(self.out.ready)]
        with m.If(self.start):
            m.d.sync += [by_slot.eq(self.by_slot), wp.eq(0), rp.eq(0), count.eq(0)]
        m.d.comb += self.busy.eq((count != 0) & ~by_slot | in_flight | (out_q.level != 0))
        return m
