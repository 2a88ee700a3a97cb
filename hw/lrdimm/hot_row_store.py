"""FAE's hot rows on chip: an SRAM of table beats between the engine's memory port and the
DRAM side (docs/design.md section 6).

The host profiles a sample of its inputs for the most-accessed rows (``refree profile``,
:mod:`refree.golden.hot_rows`) and loads their beats here before a run of batches.  While
they are held, every engine command to one of their beat addresses is served by the store:
a read from SRAM, a write into SRAM (write-back: the beat is marked dirty); commands to
other addresses pass to the DRAM side unchanged.  Reads leave in port order whoever served
them, so the memory port's contract (:mod:`refree.hw.engine.memport`) holds and the engine
needs no change: every mode composes with the store, and values cannot change, only where
a beat lives.  A flush writes the dirty beats back and empties the store.

Why at the memory port and not in the analyzer: the analyzer would have to tell the row
fetcher, the updaters and the Adagrad unit where each distinct row lives; at the port one
tag compare a command covers every user, with the same effect (no DRAM command for a hot
beat) at one cycle of latency.  The store holds table beats only; the Adagrad state of hot
rows stays in DRAM (its beats are never loaded, so they miss).

Placement: set-associative, ``ways`` beats a set; a beat's set is :func:`set_index` (the
XOR of its address's ``set_bits``-bit digits, so that a row's beats and neighbouring rows
spread over the sets).  A load places each beat in the first free way of its set, in load
order; the host finds the same placement with :func:`placement` and keeps only what fits.

Jobs, each started while the store is idle (the chip runs them as jobs of their own, the
engine idle meanwhile):

* **load** (``load``, with ``list_addr`` and ``count``): the hot set is a list in DRAM of
  ``count`` beat addresses, 32-bit words sixteen to a beat from ``list_addr``; the store
  reads it and places each beat, reading it from DRAM into its way.  Only into an empty
  store, and never more beats than it holds.  A load places every beat or none:
  ``HOT_TOO_MANY`` and ``HOT_NOT_EMPTY`` refuse it before anything is read; a beat already
  placed (``HOT_DUPLICATE``) or a set with no free way (``HOT_SET_FULL``) fails it, the
  rest of the list is read and dropped, and the store is emptied again.  ``error`` is the
  last load's outcome (:class:`~refree.golden.errors.ErrorCode`).
* **flush** (``flush``): every dirty beat is written to DRAM, then the store is empty.

Reset empties the store: the tag SRAM is cleared a set a cycle (``busy`` meanwhile).

Reads leave in port order through an order queue of ``reads_in_flight`` entries (the DRAM
side's reads in flight and some: ``NmpCore``); a read hit's beat waits in a queue as deep
for the reads before it, so that a hit never holds the lookup while misses are in flight.
"""
from dataclasses import dataclass

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from refree.golden.errors import ErrorCode

from ..engine.credits import room
from ..engine.memport import BEAT_BITS, mem_port
from ..engine.sram import rmw_memory

__all__ = ["HotStoreParams", "HotRowStore", "set_index", "placement", "LIST_WORDS", "order_depth", "HOT_JOB_ENGINE",
           "HOT_JOB_LOAD", "HOT_JOB_FLUSH"]

LIST_WORDS = 16         # beat addresses per beat of the hot list (32-bit words)
# The store's reads in flight beyond the DRAM side's: its own hits (:func:`order_depth`)
HITS_IN_FLIGHT = 16


def order_depth(dram_reads_in_flight):
    """The store's order queue (and read-hit queue): every read the DRAM side holds and
    ``HITS_IN_FLIGHT`` of its own hits (``NmpCore``'s store; the performance model's)."""
    return dram_reads_in_flight + HITS_IN_FLIGHT
HOT_JOB_ENGINE, HOT_JOB_LOAD, HOT_JOB_FLUSH = 0, 1, 2     # a chip job's ``hot_job``: what it starts


@dataclass(frozen=True)
class HotStoreParams:
    """The ``[hot]`` section of the configuration: a store of ``beats`` 64-byte beats
    (0: no store; else a power of two) in ``ways``-way sets (a power of two up to 16)."""
    beats: int = 0
    ways: int = 4

    def __post_init__(self):
        for name, v in (("beats", self.beats), ("ways", self.ways)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v & (v - 1) or (name == "ways" and v < 1):
                raise ValueError(f"HotStoreParams.{name} must be {'0 or ' if name == 'beats' else ''}"
                                 f"a power of two, not {v!r}")
        if self.beats and not self.ways <= min(self.beats, 16):
            raise ValueError(f"HotStoreParams.ways must be at most beats ({self.beats}) and 16, not {self.ways}")

    @property
    def enabled(self):
        return self.beats > 0


def set_index(addr, addr_bits, set_bits):
    """The set of a beat address: the XOR of its ``set_bits``-bit digits.  ``addr`` is an
    int (the host's placement) or an Amaranth value (the store's lookup): one rule."""
    if set_bits == 0:
        return 0 if isinstance(addr, int) else C(0, 0)
    digits = range(0, addr_bits, set_bits)
    if isinstance(addr, int):
        out = 0
        for lo in digits:
            out ^= (addr >> lo) & ((1 << min(set_bits, addr_bits - lo)) - 1)
        return out
    out = addr[0:set_bits]
    for lo in digits[1:]:
        out = out ^ addr[lo:min(lo + set_bits, addr_bits)]
    return out


def placement(addrs, addr_bits, beats, ways, used=None):
    """The slot (``set * ways + way``) of each beat address of a load into an empty store,
    as the store places them (the first free way of the set, in order), or ``(ErrorCode, i)``
    for the first address ``i`` that fails the load.  ``used`` ({set: ways taken}): beats
    placed before these, updated when all of these fit (the host adds a hot set row by row)."""
    if len(addrs) > beats:
        return ErrorCode.HOT_TOO_MANY, beats
    set_bits = (beats // ways).bit_length() - 1
    taken = dict(used or {})
    seen, slots = set(), []
    for i, a in enumerate(addrs):
        if a in seen:
            return ErrorCode.HOT_DUPLICATE, i
        s = set_index(int(a), addr_bits, set_bits)
        if taken.get(s, 0) == ways:
            return ErrorCode.HOT_SET_FULL, i
        seen.add(a)
        slots.append(s * ways + taken.get(s, 0))
        taken[s] = taken.get(s, 0) + 1
    if used is not None:
        used.update(taken)
    return slots


class Kind(enum.Enum, shape=2):
    """Who waits for a read's response, in port order."""
    MISS = 0            # the engine, from DRAM
    HIT = 1             # the engine, from the store
    LOAD = 2            # the store's way, from DRAM
    LIST = 3            # the hot list's beat, from DRAM


class HotRowStore(wiring.Component):
    """``beats`` 64-byte beats of hot table rows in ``ways``-way sets (both powers of two).

    Members
    -------
    up : In(mem_port)
        The engine's memory port.
    down : Out(mem_port)
        The DRAM side's.
    load, list_addr, count : In
        Start a load job of the ``count`` beat addresses listed from ``list_addr`` (a
        strobe; taken while idle and no command is offered on ``up``, ignored otherwise).
    flush : In(1)
        Start a flush (a strobe; likewise, and not beside ``load``).
    busy : Out(1)
        Clearing, loading, flushing, or commands and responses in flight.
    error : Out(8)
        The last load's outcome, an :class:`~refree.golden.errors.ErrorCode`.
    held : Out(range(beats + 1))
        Beats held.
    counters : Out(Counters)
        Since reset: engine reads and writes served by the store (the DRAM beats they
        saved), beats read into the store by loads, beats written back by flushes.
    """

    Counters = data.StructLayout({"read_hits": 32, "write_hits": 32, "loaded": 32, "written_back": 32})
    LIST_DEPTH = 6      # list beats buffered (and in flight): a load's list read ahead of its reads

    def __init__(self, addr_bits, beats=4096, ways=4, reads_in_flight=256):
        try:                        # (the rule of HotStoreParams; a store has beats)
            if not HotStoreParams(beats, ways).enabled:
                raise ValueError(f"beats must be a power of two, not {beats!r}")
        except ValueError as err:
            raise ValueError(f"HotRowStore: {err}") from None
        if isinstance(reads_in_flight, bool) or not isinstance(reads_in_flight, int) or reads_in_flight < 2:
            raise ValueError(f"HotRowStore reads_in_flight must be an integer of at least 2, not {reads_in_flight!r}")
        if not 1 <= addr_bits <= 32:
            raise ValueError(f"HotRowStore addr_bits must be 1 to 32 (the hot list's words), not {addr_bits!r}")
        self.addr_bits, self.beats, self.ways, self.reads_in_flight = addr_bits, beats, ways, reads_in_flight
        self.sets = beats // ways
        self.set_bits, self.way_bits = self.sets.bit_length() - 1, ways.bit_length() - 1
        self.Entry = data.StructLayout({"valid": 1, "dirty": 1, "addr": addr_bits})
        super().__init__({
            "up": In(mem_port(addr_bits)), "down": Out(mem_port(addr_bits)),
            "load": In(1), "list_addr": In(addr_bits), "count": In(32), "flush": In(1),
            "busy": Out(1), "error": Out(8), "held": Out(range(beats + 1)), "counters": Out(self.Counters)})

    def elaborate(self, platform):
        m = Module()
        tag_rd, tag_wr = rmw_memory(m, "tags", data.ArrayLayout(self.Entry, self.ways), self.sets)
        data_rd, data_wr = rmw_memory(m, "beats", BEAT_BITS, self.beats)
        m.submodules.order = order = fifo.SyncFIFOBuffered(
            width=len(Cat(Signal(Kind), Signal(range(self.beats)))), depth=self.reads_in_flight)
        # (a read hit waits here until the reads before it have left: as deep as the order,
        # so that hits never wait for room behind misses; 5 places held the store to about
        # four hits a DRAM read's latency: MovieLens B = 32 baseline forward 7,745 cycles
        # with the store, 6,349 the model's without that limit)
        m.submodules.hits = hits = fifo.SyncFIFOBuffered(width=BEAT_BITS, depth=self.reads_in_flight)
        m.submodules.hot_list = hot_list = fifo.SyncFIFOBuffered(width=BEAT_BITS, depth=self.LIST_DEPTH)
        hit_reading = Signal()      # a read hit's SRAM read is in flight (its beat next cycle)
        m.d.sync += hit_reading.eq(0)
        m.d.comb += [hits.w_en.eq(hit_reading), hits.w_data.eq(data_rd.data)]
        # (by the queues' levels: a buffered queue shows an entry at its output two cycles
        # after it is written, its level the cycle after)
        quiet = (order.level == 0) & ~hit_reading & (hits.level == 0) & (hot_list.level == 0)
        walking = Signal()          # a flush or a clear has the SRAM (assigned after the lookup: it overrides)
        loading, clear = Signal(), Signal()
        entry = self._load_list(m, order, hot_list, loading, walking, quiet)
        self._lookup(m, tag_rd, tag_wr, data_rd, data_wr, order, hits, hit_reading, entry, loading, walking,
                     quiet, clear)
        self._responses(m, order, hits, hot_list, data_wr)
        m.d.comb += walking.eq(self._walks(m, tag_rd, tag_wr, data_rd, clear))
        m.d.comb += self.busy.eq(walking | loading | entry.s1_valid | ~quiet)
        return m

    def _load_list(self, m, order, hot_list, loading, walking, quiet):
        """A load's start and its list: the list's beats read ahead (before stage 1's reads,
        into ``hot_list``), and their words handed on one a cycle as the load's entries."""
        entry = Signal(data.StructLayout({"valid": 1, "ready": 1, "addr": self.addr_bits, "last": 1,
                                          "s1_valid": 1, "port_used": 1}))
        base, beats_left, fetching = Signal(self.addr_bits), Signal(32), Signal(range(self.LIST_DEPTH + 1))
        left, word = Signal(32), Signal(range(LIST_WORDS))
        # (a job's strobe is taken only while idle and no engine command is offered)
        with m.If(self.load & ~self.busy & ~self.up.cmd.valid):
            with m.If(self.count > self.beats):
                m.d.sync += self.error.eq(ErrorCode.HOT_TOO_MANY)
            with m.Elif(self.held != 0):
                m.d.sync += self.error.eq(ErrorCode.HOT_NOT_EMPTY)
            with m.Else():
                m.d.sync += [self.error.eq(ErrorCode.OK), loading.eq(self.count != 0), base.eq(self.list_addr),
                             beats_left.eq((self.count + LIST_WORDS - 1) // LIST_WORDS), left.eq(self.count),
                             word.eq(0)]
        fetch = loading & (beats_left != 0) & room(hot_list, fetching) & order.w_rdy
        m.d.comb += entry.port_used.eq(fetch)
        with m.If(fetch):
            m.d.comb += [self.down.cmd.valid.eq(1), self.down.cmd.payload.addr.eq(base),
                         self.down.cmd.payload.write.eq(0), order.w_data.eq(Cat(Kind.LIST, 0))]
            with m.If(self.down.cmd.ready):
                m.d.comb += order.w_en.eq(1)
                m.d.sync += [base.eq(base + 1), beats_left.eq(beats_left - 1)]
        m.d.sync += fetching.eq(fetching + (fetch & self.down.cmd.ready) - hot_list.w_en)
        m.d.comb += [entry.valid.eq(hot_list.r_rdy & (left != 0)),
                     entry.addr.eq(hot_list.r_data.word_select(word, 32)[:self.addr_bits]),
                     entry.last.eq(left == 1)]
        with m.If(entry.valid & entry.ready):
            m.d.sync += [left.eq(left - 1), word.eq(word + 1)]
            with m.If((word == LIST_WORDS - 1) | (left == 1)):
                m.d.comb += hot_list.r_en.eq(1)
                m.d.sync += word.eq(0)
        return entry

    def _lookup(self, m, tag_rd, tag_wr, data_rd, data_wr, order, hits, hit_reading, entry, loading, walking,
                quiet, clear):
        """Stage 0 reads the tags of the set of the command (or load entry) it takes; stage 1
        compares and serves it: a hit from SRAM, a miss (and a load's read) to the DRAM side.
        The list's reads go first (``entry.port_used``)."""
        up, down, c = self.up, self.down, self.counters
        s1 = Signal(data.StructLayout({"valid": 1, "load": 1, "last": 1, "write": 1, "addr": self.addr_bits,
                                       "data": BEAT_BITS}))
        closing, dropping, go = Signal(), Signal(), Signal()
        advance = ~s1.valid | go
        take_up = up.cmd.valid & ~walking & ~loading & advance
        take_load = entry.valid & ~walking & advance
        m.d.comb += [up.cmd.ready.eq(take_up), entry.ready.eq(take_load), entry.s1_valid.eq(s1.valid)]
        incoming = Mux(take_up, up.cmd.payload.addr, entry.addr)
        m.d.comb += [tag_rd.addr.eq(set_index(incoming, self.addr_bits, self.set_bits)), tag_rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [s1.valid.eq(take_up | take_load), s1.load.eq(take_load), s1.addr.eq(incoming),
                         s1.write.eq(take_up & up.cmd.payload.write), s1.data.eq(up.cmd.payload.data),
                         s1.last.eq(entry.last)]

        entries = tag_rd.data
        match = Cat(*[e.valid & (e.addr == s1.addr) for e in entries])
        free = Cat(*[~e.valid for e in entries])
        way, free_way = Signal(range(self.ways)), Signal(range(self.ways))
        for w in reversed(range(self.ways)):        # the first matching way, the first free one
            with m.If(match[w]):
                m.d.comb += way.eq(w)
            with m.If(free[w]):
                m.d.comb += free_way.eq(w)
        set_ = set_index(s1.addr, self.addr_bits, self.set_bits)
        slot, free_slot = (Cat(way, set_), Cat(free_way, set_)) if self.way_bits else (set_, set_)
        port = order.w_rdy & ~entry.port_used       # a read may go: its place in the order
        m.d.comb += [tag_wr.addr.eq(set_), tag_wr.data.eq(entries)]
        with m.If(~entry.port_used):
            m.d.comb += [down.cmd.payload.addr.eq(s1.addr), down.cmd.payload.write.eq(s1.write),
                         down.cmd.payload.data.eq(s1.data), order.w_data.eq(Cat(Kind.MISS, slot))]
        with m.If(s1.valid & ~s1.load):
            with m.If(match.any() & s1.write):                  # write hit: into SRAM, dirty
                m.d.comb += [go.eq(1), data_wr.addr.eq(slot), data_wr.data.eq(s1.data), data_wr.en.eq(1),
                             tag_wr.data[way].dirty.eq(1), tag_wr.en.eq(1)]
                m.d.sync += c.write_hits.eq(c.write_hits + 1)
            with m.Elif(match.any()):                           # read hit: from SRAM, in port order
                with m.If(port & room(hits, hit_reading)):
                    m.d.comb += [go.eq(1), data_rd.addr.eq(slot), data_rd.en.eq(1),
                                 order.w_data.eq(Cat(Kind.HIT, slot)), order.w_en.eq(1)]
                    m.d.sync += [hit_reading.eq(1), c.read_hits.eq(c.read_hits + 1)]
            with m.Elif((s1.write | order.w_rdy) & ~entry.port_used):     # miss: to the DRAM side
                m.d.comb += down.cmd.valid.eq(1)
                with m.If(down.cmd.ready):
                    m.d.comb += [go.eq(1), order.w_en.eq(~s1.write)]
        with m.If(s1.valid & s1.load):
            with m.If(dropping):
                m.d.comb += go.eq(1)
            with m.Elif(match.any() | ~free.any()):             # the load fails: drop its rest
                m.d.comb += go.eq(1)
                m.d.sync += [self.error.eq(Mux(match.any(), ErrorCode.HOT_DUPLICATE, ErrorCode.HOT_SET_FULL)),
                             dropping.eq(1)]
            with m.Elif(port):                                  # placed: its beat read into the way
                m.d.comb += down.cmd.valid.eq(1)
                with m.If(down.cmd.ready):
                    m.d.comb += [go.eq(1), order.w_data.eq(Cat(Kind.LOAD, free_slot)), order.w_en.eq(1),
                                 tag_wr.data[free_way].valid.eq(1), tag_wr.data[free_way].dirty.eq(0),
                                 tag_wr.data[free_way].addr.eq(s1.addr), tag_wr.en.eq(1)]
                    m.d.sync += [self.held.eq(self.held + 1), c.loaded.eq(c.loaded + 1)]
            with m.If(go & s1.last):
                m.d.sync += closing.eq(1)
        with m.If(closing & ~s1.valid & quiet):                 # every listed beat is in its way
            m.d.sync += [loading.eq(0), closing.eq(0), dropping.eq(0)]
            m.d.comb += clear.eq(dropping)

    def _responses(self, m, order, hits, hot_list, data_wr):
        """Reads leave in port order: the head of ``order`` says whose response is next."""
        up, down = self.up, self.down
        kind, slot = Signal(Kind), Signal(range(self.beats))
        m.d.comb += Cat(kind, slot).eq(order.r_data)
        from_sram = order.r_rdy & (kind == Kind.HIT)
        from_dram = order.r_rdy & (kind == Kind.MISS)
        into_way = order.r_rdy & (kind == Kind.LOAD)
        into_list = order.r_rdy & (kind == Kind.LIST)
        m.d.comb += [up.rsp.valid.eq(from_sram & hits.r_rdy | from_dram & down.rsp.valid),
                     up.rsp.payload.eq(Mux(from_sram, hits.r_data, down.rsp.payload)),
                     hits.r_en.eq(from_sram & up.rsp.ready),
                     down.rsp.ready.eq(from_dram & up.rsp.ready | into_way | into_list),
                     hot_list.w_en.eq(into_list & down.rsp.valid), hot_list.w_data.eq(down.rsp.payload),
                     order.r_en.eq(up.rsp.valid & up.rsp.ready | (into_way | into_list) & down.rsp.valid)]
        with m.If(into_way & down.rsp.valid):       # (no engine command while a load runs)
            m.d.comb += [data_wr.addr.eq(slot), data_wr.data.eq(down.rsp.payload), data_wr.en.eq(1)]

    def _walks(self, m, tag_rd, tag_wr, data_rd, clear):
        """The walks over the SRAM: a flush (each dirty beat to DRAM, a slot a cycle, then
        its set emptied) and the clear (a set a cycle) after reset or a failed load."""
        down, c = self.down, self.counters
        clearing, flushing = Signal(init=1), Signal()
        at = Signal(range(self.beats + 1))          # the slot (flush) or set (clear) read next
        f1 = Signal(data.StructLayout({"valid": 1, "slot": range(self.beats)}))
        f_go = Signal()
        f_adv = ~f1.valid | f_go
        with m.If(self.flush & ~self.load & ~self.busy & ~self.up.cmd.valid):
            m.d.sync += [flushing.eq(1), at.eq(0)]
        with m.If(clear):
            m.d.sync += [clearing.eq(1), at.eq(0)]
        with m.If(clearing):
            m.d.comb += [tag_wr.addr.eq(at), tag_wr.data.eq(0), tag_wr.en.eq(1)]
            m.d.sync += at.eq(at + 1)
            with m.If(at == self.sets - 1):
                m.d.sync += [clearing.eq(0), self.held.eq(0)]
        with m.If(flushing):
            m.d.comb += [tag_rd.addr.eq(at >> self.way_bits), tag_rd.en.eq(f_adv),
                         data_rd.addr.eq(at), data_rd.en.eq(f_adv)]
            with m.If(f_adv):
                m.d.sync += [f1.valid.eq(at < self.beats), f1.slot.eq(at), at.eq(at + (at < self.beats))]
            way = f1.slot[:self.way_bits] if self.way_bits else 0
            last_way = way == self.ways - 1 if self.way_bits else 1
            entry = tag_rd.data[way]
            dirty = entry.valid & entry.dirty
            m.d.comb += [down.cmd.payload.addr.eq(entry.addr), down.cmd.payload.write.eq(1),
                         down.cmd.payload.data.eq(data_rd.data), f_go.eq(f1.valid & (~dirty | down.cmd.ready))]
            with m.If(f1.valid & dirty):
                m.d.comb += down.cmd.valid.eq(1)
                with m.If(down.cmd.ready):
                    m.d.sync += c.written_back.eq(c.written_back + 1)
            with m.If(f_go & last_way):                   # its set written back: empty it
                m.d.comb += [tag_wr.addr.eq(f1.slot >> self.way_bits), tag_wr.data.eq(0), tag_wr.en.eq(1)]
            with m.If(f_go & (f1.slot == self.beats - 1)):
                m.d.sync += [flushing.eq(0), f1.valid.eq(0), self.held.eq(0)]
        return clearing | flushing
