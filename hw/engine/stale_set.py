"""Slipstream's stale set on chip: the (table, row) pairs whose updates a backward job skips.

Slipstream (docs/design.md section 6, :mod:`refree.golden.slipstream`) skips the updates of
hot rows that have stopped changing.  The host decides which rows are stale; the engine
loads the set at the start of each backward job (from a list in memory, one int64 entry a
pair, ``row | table << ENTRY_TABLE_SHIFT``) and asks it, for each lookup that a backward
pass would take, whether the lookup's row is stale: such a lookup takes no part in the
merge, and its row is neither read nor written.

Placement: set-associative, ``ways`` pairs a set; a pair's set is the XOR of the digits of
its key, ``row | table << index_width`` (:func:`~refree.hw.lrdimm.hot_row_store.set_index`,
the hot-row store's rule: one rule), the first free way in list order.  A pair whose set is
full sets ``full`` (the engine's ``STALE_SET_FULL``: the job writes nothing); the host
keeps only the pairs that fit (:func:`fit_stale`).

The tags are a register file read combinationally (one set a cycle), so the engine's
lookup walker tests a lookup in the cycle it meets it.  Cost at 1,024 entries of 35 bits
(``index_width`` 32, 8 tables): 35 Kibit of tags and 1,024 valid bits.

Members
-------
clear : In(1)           empties the set (in the next cycle) and clears ``full``
insert : In(stream)     a key to add, one a cycle (always ready)
full : Out(1)           an insert since the last clear found its set full (it was dropped)
key : In(key_bits)      the key asked ...
hit : Out(1)            ... is in the set (combinational)
"""
from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StaleSetParams", "StaleSet", "ENTRY_TABLE_SHIFT", "stale_key", "fit_stale"]

#: An entry of the list in memory: the row in its low bits, the table from this bit on.
ENTRY_TABLE_SHIFT = 48


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
        super().__init__({"clear": In(1), "insert": In(stream.Signature(key_bits)), "full": Out(1),
                          "key": In(key_bits), "hit": Out(1)})

    def elaborate(self, platform):
        from refree.hw.lrdimm.hot_row_store import set_index
        m = Module()
        W, S = self.params.ways, self.params.entries // self.params.ways
        set_bits = self.params.set_bits
        valid = Signal(W * S)                   # way w of set s: bit s * W + w

        def set_of(key):
            return set_index(key, self.key_bits, set_bits) if set_bits else 0

        ways = []
        for w in range(W):
            m.submodules[f"way{w}"] = mem = memory.Memory(shape=self.key_bits, depth=S, init=[])
            ways.append((mem.read_port(domain="comb"), mem.write_port()))
        # the query: one set, every way compared
        q_set, q_valid = Signal(max(1, set_bits)), Signal(W)
        m.d.comb += [q_set.eq(set_of(self.key)), q_valid.eq(valid.word_select(q_set, W))]
        m.d.comb += self.hit.eq(Cat(*[q_valid[w] & (rd.data == self.key) for w, (rd, _) in enumerate(ways)]).any())
        for rd, _ in ways:
            m.d.comb += rd.addr.eq(q_set)
        # an insert: the first free way of its set
        i_set, i_valid = Signal(max(1, set_bits)), Signal(W)
        m.d.comb += [i_set.eq(set_of(self.insert.payload)), i_valid.eq(valid.word_select(i_set, W)),
                     self.insert.ready.eq(1)]
        with m.If(self.insert.valid):
            with m.If(i_valid.all()):
                m.d.sync += self.full.eq(1)
            for _, wr in ways:
                m.d.comb += [wr.addr.eq(i_set), wr.data.eq(self.insert.payload)]
            for w in range(W):                  # (the ways before it taken)
                with m.If(~i_valid[w] & (i_valid[:w].all() if w else 1)):
                    m.d.comb += ways[w][1].en.eq(1)
                    m.d.sync += valid.bit_select(i_set * W + w, 1).eq(1)
        with m.If(self.clear):
            m.d.sync += [valid.eq(0), self.full.eq(0)]
        return m
