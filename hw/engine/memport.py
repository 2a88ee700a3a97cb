"""The engine's generic memory port and the units that use it.

The port (:data:`MemPort`) moves 64-byte beats: a command stream (beat address, write
flag, data) and a read-response stream, in order, with any latency and backpressure.  The
DDR4/LRDIMM work replaces what sits behind it.  Inside the engine several units share it
through :class:`MemArbiter`:

* :class:`ArrayReader` streams a range of int64 or int32 (offsets, indices) or 32-bit
  (weights) elements;
* :class:`RowFetcher` reads whole table rows (D/16 beats) for a stream of row addresses;
* writes (pooled outputs, updated rows) go straight to an arbiter port.

Reads of one requester come back in order.  For one address, commands take effect in port
order (a read sees every write issued before it; two writes land in their order): the
DRAM side keeps it (:mod:`refree.hw.ddr4.rank_controller`), and ``baseline``'s repeated
rows rely on it.  A requester may have at most its
``max_outstanding`` reads in flight, and the arbiter holds a response buffer of that size
for it, so a slow requester never blocks the responses of another (no deadlock).  That
bound is also what a requester can stream: by Little's law at most ``max_outstanding``
beats per round trip through the memory (about 45 clocks from the engine to a DDR4 rank
and back when idle, more under load).
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BEAT_BITS", "mem_port", "MemArbiter", "ArrayReader", "RowFetcher", "array_beats"]

BEAT_BITS = 512


def mem_cmd(addr_bits):
    return data.StructLayout({"addr": addr_bits, "write": 1, "data": BEAT_BITS})


def mem_port(addr_bits):
    """Signature of a memory port as its user sees it (commands out, responses in)."""
    return wiring.Signature({"cmd": Out(stream.Signature(mem_cmd(addr_bits))),
                             "rsp": In(stream.Signature(BEAT_BITS))})


class MemArbiter(wiring.Component):
    """Share one memory port between ``num_ports`` users; port 0 has the highest priority.

    ``max_outstanding``: reads in flight per port (and its response buffer, in beats), one
    number for every port or one per port.

    Members
    -------
    ports : list of In(mem_port)
    mem : Out(mem_port)
    """

    def __init__(self, num_ports, addr_bits, max_outstanding=16):
        if isinstance(max_outstanding, int):
            max_outstanding = [max_outstanding] * num_ports
        if len(max_outstanding) != num_ports or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                                    for k in max_outstanding):
            raise ValueError(f"MemArbiter max_outstanding must be a positive integer or one per port "
                             f"({num_ports}), not {max_outstanding!r}")
        self.num_ports, self.addr_bits, self.max_outstanding = num_ports, addr_bits, list(max_outstanding)
        super().__init__({"mem": Out(mem_port(addr_bits)),
                          **{f"port{i}": In(mem_port(addr_bits)) for i in range(num_ports)}})

    def ports(self):
        return [getattr(self, f"port{i}") for i in range(self.num_ports)]

    def elaborate(self, platform):
        m = Module()
        Ks = self.max_outstanding
        ports = self.ports()
        tag_bits = max(1, (self.num_ports - 1).bit_length())
        m.submodules.tags = tags = fifo.SyncFIFOBuffered(width=tag_bits, depth=sum(Ks))
        bufs, outstanding = [], []
        for i, (p, K) in enumerate(zip(ports, Ks)):
            buf = fifo.SyncFIFOBuffered(width=BEAT_BITS, depth=K)
            m.submodules[f"rsp{i}"] = buf
            bufs.append(buf)
            n = Signal(range(K + 1), name=f"outstanding{i}")
            outstanding.append(n)
            m.d.comb += [p.rsp.valid.eq(buf.r_rdy), p.rsp.payload.eq(buf.r_data), buf.r_en.eq(p.rsp.ready)]

        # Grant: the first port with a command that may go (a read needs a free slot in its
        # response buffer and in the tag queue).
        earlier = C(0, 1)                       # some port before this one may go
        for i, p in enumerate(ports):
            may = p.cmd.valid & (p.cmd.payload.write | ((outstanding[i] < Ks[i]) & tags.w_rdy))
            with m.If(may & ~earlier):
                m.d.comb += [self.mem.cmd.valid.eq(1), self.mem.cmd.payload.eq(p.cmd.payload),
                             p.cmd.ready.eq(self.mem.cmd.ready)]
                with m.If(self.mem.cmd.ready & ~p.cmd.payload.write):
                    m.d.comb += [tags.w_en.eq(1), tags.w_data.eq(i)]
            earlier = earlier | may
        # Responses go to the buffer of the port at the head of the tag queue.
        m.d.comb += self.mem.rsp.ready.eq(tags.r_rdy)
        with m.If(self.mem.rsp.valid & tags.r_rdy):
            m.d.comb += tags.r_en.eq(1)
        for i, p in enumerate(ports):
            m.d.comb += [bufs[i].w_data.eq(self.mem.rsp.payload),
                         bufs[i].w_en.eq(self.mem.rsp.valid & tags.r_rdy & (tags.r_data == i))]
            issued = p.cmd.valid & p.cmd.ready & ~p.cmd.payload.write
            taken = p.rsp.valid & p.rsp.ready
            m.d.sync += outstanding[i].eq(outstanding[i] + issued - taken)
        return m


def array_beats(count, int32):
    """Beats of an array of ``count`` elements from a beat boundary, 32-bit elements if
    ``int32`` (a bool, or a 1-bit value chosen per job), else 64-bit: the engine's rule of an
    input array's size in memory (the host's is ``Batch.array_beats``)."""
    if isinstance(int32, bool):
        per_beat = BEAT_BITS // (32 if int32 else 64)
        return (count + (per_beat - 1)) >> (per_beat.bit_length() - 1)
    return Mux(int32, array_beats(count, True), array_beats(count, False))


class ArrayReader(wiring.Component):
    """Stream ``count`` elements of ``elem_bits`` (64 or 32) starting at element ``first``
    of an array at beat address ``base``: one element per cycle through ``data``, or up to
    ``BEAT_BITS // elem_bits`` per cycle through ``beat`` / ``take`` (a user drives one of the
    two).  With ``narrow`` (64-bit readers only: int32 indices and offsets, as FBGEMM and
    PyTorch take them) the array holds 32-bit elements, 16 a beat, each sign-extended to
    64 bits on the way out; ``beat`` then shows the beat's half that holds the next element,
    so its user sees 8 elements at most, as for int64.

    Members
    -------
    start : In(1)     pulse (only when not ``busy``) with ``base``, ``first``, ``count``, ``narrow``
    narrow : In(1)    (readers of ``elem_bits`` 64 only) the array's elements are 32-bit
    data : Out(stream.Signature(elem_bits))
    beat : Out(WideView)  the response beat (its half, narrow) at the head: ``valid``, its
                      ``elems``, the ``lane`` of the next element and ``avail``, the elements
                      left in it
    take : In(range(N + 1))   elements taken from ``beat`` this cycle (at most ``avail``,
                      only when ``valid``): the next ``take`` lanes from ``lane``
    busy : Out(1)     until every element has been taken
    port : Out(mem_port)
    """

    def __init__(self, addr_bits, count_bits=32, elem_bits=64):
        if elem_bits not in (32, 64):
            raise ValueError(f"ArrayReader elem_bits must be 32 or 64, not {elem_bits!r}")
        self.addr_bits, self.elem_bits = addr_bits, elem_bits
        N = BEAT_BITS // elem_bits
        self.WideView = data.StructLayout({"valid": 1, "elems": data.ArrayLayout(elem_bits, N),
                                           "lane": range(N), "avail": range(N + 1)})
        super().__init__({"start": In(1), "base": In(addr_bits), "first": In(count_bits),
                          "count": In(count_bits), "busy": Out(1),
                          **({"narrow": In(1)} if elem_bits == 64 else {}),
                          "data": Out(stream.Signature(elem_bits)),
                          "beat": Out(self.WideView), "take": In(range(N + 1)),
                          "port": Out(mem_port(addr_bits))})

    def elaborate(self, platform):
        m = Module()
        W = self.elem_bits
        N = BEAT_BITS // W                      # elements a view shows (a beat's, wide)
        sh = N.bit_length() - 1
        narrowable = W == 64
        narrow = Signal() if narrowable else C(0, 1)    # this array's elements are 32-bit
        NN = 2 * N if narrowable else N         # most elements a beat holds
        next_beat = Signal(self.addr_bits)      # next beat address to request
        beats_left = Signal(len(self.count))    # beats still to request
        left = Signal(len(self.count))          # elements still to deliver
        lane = Signal(NN.bit_length() - 1)      # of the next element in its beat
        m.d.comb += [self.busy.eq(left != 0), self.port.rsp.ready.eq(0)]

        def begin(k):                           # 2**k elements a beat
            end = self.first + self.count
            m.d.sync += [next_beat.eq(self.base + self.first[k:]), lane.eq(self.first[:k]),
                         beats_left.eq(Mux(self.count == 0, 0, ((end + (1 << k) - 1) >> k) - self.first[k:]))]
        with m.If(self.start):
            m.d.sync += left.eq(self.count)
            if not narrowable:
                begin(sh)
            else:
                m.d.sync += narrow.eq(self.narrow)
                with m.If(self.narrow):
                    begin(sh + 1)
                with m.Else():
                    begin(sh)
        # requests
        m.d.comb += [self.port.cmd.valid.eq(beats_left != 0), self.port.cmd.payload.addr.eq(next_beat),
                     self.port.cmd.payload.write.eq(0)]
        with m.If(self.port.cmd.valid & self.port.cmd.ready):
            m.d.sync += [next_beat.eq(next_beat + 1), beats_left.eq(beats_left - 1)]
        # delivery: the response beat at the head (narrow: its half holding lane ``lane``),
        # from lane ``lane`` on; one element a cycle through ``data``, or ``take`` of them
        beat = self.beat
        words = self.port.rsp.payload
        view_lane = lane[:sh]
        m.d.comb += [beat.valid.eq(self.port.rsp.valid & (left != 0)), beat.lane.eq(view_lane),
                     beat.avail.eq(Mux(left < N - view_lane, left, N - view_lane))]
        if narrowable:
            half = words.word_select(lane[sh], BEAT_BITS // 2)
            wide_elems = Cat(*[Cat(e, e[31].replicate(32)) for e in (half.word_select(i, 32) for i in range(N))])
            m.d.comb += beat.elems.eq(Mux(narrow, wide_elems, words))
        else:
            m.d.comb += beat.elems.eq(words)
        m.d.comb += [self.data.valid.eq(beat.valid), self.data.payload.eq(beat.elems[view_lane])]
        taken = Signal(range(N + 1))
        m.d.comb += taken.eq(Mux(self.data.valid & self.data.ready, 1, Mux(beat.valid, self.take, 0)))
        # the beat is done at its last element (narrow: the second half's) or the array's
        beat_done = taken == beat.avail
        if narrowable:
            beat_done &= ~narrow | lane[sh] | (taken == left)
        with m.If(taken != 0):
            m.d.sync += [left.eq(left - taken), lane.eq(Mux(narrow, lane + taken, (view_lane + taken)[:sh]))]
            with m.If(beat_done):
                m.d.comb += self.port.rsp.ready.eq(1)
        return m


class RowFetcher(wiring.Component):
    """Read ``beats`` beats for each row address taken, ``stride`` beats apart (1:
    consecutive; a striped staging row, :mod:`.staging`: the stripe), and stream them out.

    Members
    -------
    rows : In(stream.Signature(addr_bits))   beat address of each row, in order
    beats_out : Out(stream.Signature(512))   the rows' beats, in order
    port : Out(mem_port)
    """

    def __init__(self, addr_bits, beats, stride=1):
        self.addr_bits, self.beats, self.stride = addr_bits, beats, stride
        super().__init__({"rows": In(stream.Signature(addr_bits)),
                          "beats_out": Out(stream.Signature(BEAT_BITS)),
                          "port": Out(mem_port(addr_bits))})

    def elaborate(self, platform):
        m = Module()
        k = Signal(range(self.beats + 1))
        m.d.comb += [self.port.cmd.valid.eq(self.rows.valid),
                     self.port.cmd.payload.addr.eq(self.rows.payload + k * self.stride),
                     self.port.cmd.payload.write.eq(0)]
        with m.If(self.port.cmd.valid & self.port.cmd.ready):
            with m.If(k == self.beats - 1):
                m.d.sync += k.eq(0)
                m.d.comb += self.rows.ready.eq(1)
            with m.Else():
                m.d.sync += k.eq(k + 1)
        m.d.comb += [self.beats_out.valid.eq(self.port.rsp.valid), self.beats_out.payload.eq(self.port.rsp.payload),
                     self.port.rsp.ready.eq(self.beats_out.ready)]
        return m
