"""Slipstream's stale set on chip: the (table, row) pairs whose updates a backward job skips.

Slipstream (docs/design.md section 6, :mod:`refree.golden.slipstream`) skips the updates of
hot rows that have stopped changing.  The host decides which rows are stale; a backward
job given a list in memory (one int64 entry a pair, ``row | table << ENTRY_TABLE_SHIFT``)
loads the set before its batch check, and it stays for the jobs after it until the next
load; a backward job that uses it asks it, for each lookup that a pass would take, whether
the lookup's row is stale: such a lookup takes no part in the merge, and its row is
neither read nor written.

Placement: set-associative, ``ways`` pairs a set; a pair's set is the XOR of the digits of
its key, ``row | table << index_width`` (:func:`~refree.hw.lrdimm.hot_row_store.set_index`,
the hot-row store's rule: one rule), the first free way in list order.  A pair whose set is
full sets ``full`` (the engine's ``STALE_SET_FULL``: the job writes nothing); the host
keeps only the pairs that fit (:func:`fit_stale`).

The tags and a word of valid bits a set are small SRAMs read combinationally (one set a
cycle: a register file), so the engine's lookup walker tests a lookup in the cycle it meets
it.  A clear zeroes the valid words a set a cycle (``entries / ways`` cycles, during which
the set takes no insert and answers no, ``ready`` low); so does a reset.  The set keeps its
pairs from job to job until the next load (Slipstream's set changes only at a window's
end).  Cost at 1,024 entries of 35 bits (``index_width`` 32,
8 tables): 35 Kibit of tags, 1 Kibit of valid bits and 3 Kibit of marks with their epochs.

Members
-------
clear : In(1)           empties the set (``entries / ways`` cycles) and clears ``full``
ready : Out(1)          not clearing (after a clear or a reset)
insert : In(stream)     a key to add, one a cycle (ready unless clearing)
full : Out(1)           an insert since the last clear found its set full (it was dropped)
key : In(key_bits)      the key asked ...
hit : Out(1)            ... is in the set (combinational) ...
first : Out(1)          ... and not yet marked since the last ``unmark`` (combinational)
mark : In(1)            marks the key asked, a hit (its row's update was skipped: ``first``
                        counts each stale row skipped once a job)
unmark : In(1)          every pair unmarked (a job begins): the marks carry the epoch of
                        the job that made them, so this is a count up of the epoch; when
                        the epoch wraps, the marks are swept a set a cycle (``ready`` low)
"""
from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StaleSetParams", "StaleSet", "ENTRY_TABLE_SHIFT", "stale_key", "fit_stale"]

#: An entry of the list in memory: the row in its low bits, the table from this bit on.
ENTRY_TABLE_SHIFT = 48
#: Bits of a set's mark epoch: the marks are swept once every 2**EPOCH_BITS jobs (an
#: ``entries / ways``-cycle sweep, 256 cycles at 1,024 entries in 4 ways: a cycle a job).
EPOCH_BITS = 8


@dataclass(frozen=True)
class StaleSetParams:
    """The ``[slipstream]`` section of the configuration: a stale set of ``entries`` (table,
    row) pairs (0: none, the default chip; else a power of two) in ``ways``-way sets (a power
    of two, at most 16 and ``entries``)."""
    entries: int = 0
    ways: int = 4

    def __post_init__(self):
        for name, v in (("entries", self.entries), ("ways", self.ways)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v & (v - 1) or (name == "ways" and v < 1):
                raise ValueError(f"StaleSetParams.{name} must be {'0 or ' if name == 'entries' else ''}"
                                 f"a power of two, not {v!r}")
        if self.entries and not self.ways <= min(self.entries, 16):
            raise ValueError(f"StaleSetParams.ways must be at most entries ({self.entries}) and 16, "
                             f"not {self.ways}")

    @property
    def enabled(self):
        return self.entries > 0

    @property
    def set_bits(self):
        return (self.entries // self.ways).bit_length() - 1


def table_bits(max_tables):
    return max(1, (max_tables - 1).bit_length())


def stale_key(table, row, index_width):
    """The key of a pair (ints): what the set stores and places."""
    return int(row) | int(table) << index_width


def fit_stale(stale, params, index_width, max_tables):
    """Per table a boolean array of rows (Slipstream's stale rows): the pairs that the set
    holds, table by table, rows ascending, each placed as the set places it (a pair whose set
    is full is left out and updated as usual).  Returns (the list's int64 entries, per table
    the boolean array of the rows kept)."""
    from refree.hw.lrdimm.hot_row_store import placement
    key_bits = index_width + table_bits(max_tables)
    used, entries, kept = {}, [], []
    for t, mask in enumerate(stale):
        keep = mask.copy()
        for r in map(int, mask.nonzero()[0]):
            if len(entries) < params.entries and isinstance(
                    placement([stale_key(t, r, index_width)], key_bits, params.entries, params.ways, used), list):
                entries.append(r | t << ENTRY_TABLE_SHIFT)
            else:
                keep[r] = False
        kept.append(keep)
    return entries, kept


class StaleSet(wiring.Component):
    """See the module docstring: ``params`` a :class:`StaleSetParams` (enabled), keys of
    ``key_bits``."""

    def __init__(self, params, key_bits):
        if not params.enabled:
            raise ValueError("a StaleSet needs entries (StaleSetParams.entries > 0)")
        self.params, self.key_bits = params, key_bits
        super().__init__({"clear": In(1), "ready": Out(1), "insert": In(stream.Signature(key_bits)), "full": Out(1),
                          "key": In(key_bits), "hit": Out(1), "first": Out(1), "mark": In(1),
                          "unmark": In(1)})

    def elaborate(self, platform):
        from refree.hw.lrdimm.hot_row_store import set_index
        m = Module()
        W, S, set_bits = self.params.ways, self.params.entries // self.params.ways, self.params.set_bits

        def set_of(key):
            return set_index(key, self.key_bits, set_bits) if set_bits else 0

        # a word of valid bits a set (way w: bit w), one of marked bits with the epoch that
        # marked them, and a tag memory a way
        m.submodules.valid = valid = memory.Memory(shape=W, depth=S, init=[])
        q_valid, i_valid, valid_wr = valid.read_port(domain="comb"), valid.read_port(domain="comb"), valid.write_port()
        m.submodules.marked = marked = memory.Memory(shape=W + EPOCH_BITS, depth=S, init=[])
        q_marked, marked_wr = marked.read_port(domain="comb"), marked.write_port()
        tags = []
        for w in range(W):
            m.submodules[f"way{w}"] = mem = memory.Memory(shape=self.key_bits, depth=S, init=[])
            tags.append((mem.read_port(domain="comb"), mem.write_port()))
        sweeping = Signal(init=1)               # (a reset clears it too)
        sweeping_marks = Signal()               # (the epoch wrapped: the marks alone)
        sweep = Signal(max(1, set_bits))
        epoch = Signal(EPOCH_BITS)
        busy = sweeping | sweeping_marks
        m.d.comb += self.ready.eq(~busy)
        # the query: one set, every way compared
        q_set, i_set = Signal(max(1, set_bits)), Signal(max(1, set_bits))
        m.d.comb += [q_set.eq(set_of(self.key)), q_valid.addr.eq(q_set), q_marked.addr.eq(q_set),
                     i_set.eq(set_of(self.insert.payload)), i_valid.addr.eq(i_set)]
        hits = Cat(*[q_valid.data[w] & (rd.data == self.key) for w, (rd, _) in enumerate(tags)])
        marks = Mux(q_marked.data[W:] == epoch, q_marked.data[:W], 0)     # (an older job's: none)
        m.d.comb += [self.hit.eq(~busy & hits.any()), self.first.eq(~busy & (hits & ~marks).any()),
                     marked_wr.addr.eq(q_set), marked_wr.data.eq(Cat(marks | hits, epoch)),
                     marked_wr.en.eq(self.mark & self.hit)]
        for rd, _ in tags:
            m.d.comb += rd.addr.eq(q_set)
        # an insert: the first free way of its set (the ways before it taken)
        m.d.comb += self.insert.ready.eq(~sweeping)
        with m.If(self.insert.valid & ~sweeping):
            with m.If(i_valid.data.all()):
                m.d.sync += self.full.eq(1)
            m.d.comb += [valid_wr.addr.eq(i_set), valid_wr.en.eq(~i_valid.data.all())]
            for w, (_, wr) in enumerate(tags):
                m.d.comb += [wr.addr.eq(i_set), wr.data.eq(self.insert.payload)]
                with m.If(~i_valid.data[w] & (i_valid.data[:w].all() if w else 1)):
                    m.d.comb += [wr.en.eq(1), valid_wr.data.eq(i_valid.data | (1 << w))]
        # a clear: every set's valid and marks words zeroed, a set a cycle (S cycles; the set
        # answers and takes inserts again after it); an epoch's wrap: the marks words alone
        with m.If(busy):
            m.d.comb += [marked_wr.addr.eq(sweep), marked_wr.data.eq(0), marked_wr.en.eq(1)]
            m.d.sync += sweep.eq(sweep + 1)
            with m.If(sweep == S - 1):
                m.d.sync += [sweeping.eq(0), sweeping_marks.eq(0)]
        with m.If(sweeping):
            m.d.comb += [valid_wr.addr.eq(sweep), valid_wr.data.eq(0), valid_wr.en.eq(1)]
        with m.If(self.unmark):                 # (marks of epoch 0 swept before it comes again)
            m.d.sync += epoch.eq(epoch + 1)
            with m.If(epoch == (1 << EPOCH_BITS) - 1):
                m.d.sync += [sweeping_marks.eq(1), sweep.eq(0)]
        with m.If(self.clear):
            m.d.sync += [sweeping.eq(1), sweep.eq(0), self.full.eq(0)]
        return m
