"""Lookup buffer: the part's lookups on chip, replayed in index order or bag-interleaved.

``baseline`` reads one table row per lookup and folds each bag in index order (PyTorch's
order).  Streamed bag by bag, every lookup of a bag waits for the one before it to leave
the FMA pipeline (``L + 1`` = 14 cycles), so a step ran at about 13 cycles a lookup
whatever the ranks could deliver.  Only each bag's own order is fixed: the buffer replays
the part's lookups with up to ``lanes`` bags in flight, one lookup of each in turn, so
that two lookups of one bag are ``lanes`` items apart and the fold never waits on a bag's
chain.  The sums are those of the index order, bit for bit.  The same buffer replays the
lookups in index order (``interleave`` low: ``baseline``'s backward, whose repeated rows
must see each other's updates in index order), so neither job reads the indices twice.

Writes (``write``, while the part is analysed): the lookups in index order, each with its
bag (counted from the part's first bag), ``first`` on a bag's first lookup and ``last`` on
its last; one a cycle, never refused.  Empty bags are never written (their results are
the scheduler's, not this buffer's).  Lookups of bags the part does not keep (the
analyzer's rollback) may be written too: ``replay`` leaves out bags from ``num_bags`` on.

Replay (``replay`` pulse, with or after ``start``; ``interleave`` sampled): ``out`` gives
each kept lookup once, ``{row, weight, bag, len, last}`` (``len`` its bag's length, ``last``
on the bag's last lookup).  Replay runs beside the writes: a bag is taken once it is
written whole and its number is below ``num_bags`` (live: the bags the analyzer keeps,
which grows as the part is analysed), and replay ends once ``final`` holds (``num_bags``
will not grow) and every such bag has been given.  With ``interleave``, ``lanes`` lane
registers each hold a bag
being replayed; a round-robin pointer visits one lane a cycle: a lane holding a bag gives
its next lookup, an empty lane takes the next bag (in bag order) and gives its first
lookup in the same cycle, so a lookup leaves every cycle until the last bags drain (then
a lane with nothing to give costs its cycle).  Lane ``i`` takes its first bag only in
round ``i`` (the ramp costs ``lanes * (lanes - 1) / 2`` cycles a part): neighbouring bags
often share their first rows (MovieLens: one user's growing history), and lanes in step
would read the same row ``lanes`` times in a row, all from one rank, while the other
ranks idle (measured at R = 4: the ranks took turns, 0.46 of the buses busy).  Without ``interleave`` only lane 0 is used:
index order.  Throughput one lookup a cycle; latency one cycle (the SRAM read).

Storage: ``max_lookups`` entries of ``index_width + 32`` bits (32 KiB at the defaults:
4,096 lookups, 32-bit rows, binary32 weights) and ``max_bags`` bag entries (first lookup,
length, bag), plus the lanes' registers.  Reset and ``start``: empty.
"""
from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import EngineParams

__all__ = ["LookupBuffer", "INTERLEAVED_BAGS"]

# Bags in flight: two lookups of one bag must be at least the FMA's L + 1 = 14 items apart
# for the fold to take a lookup a cycle (64 lanes, D = 64).
INTERLEAVED_BAGS = 16


class LookupBuffer(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    params : EngineParams
    lanes : int     bags replayed at once with ``interleave`` (default ``INTERLEAVED_BAGS``)

    Members
    -------
    start : In(1)           pulse: empty (not while ``busy``)
    write : In({en, row, weight, bag, first, last})
    replay : In(1)          pulse: replay the lookups written since ``start`` (also in its cycle)
    interleave : In(1)      sampled with ``replay``
    num_bags : In(bag_count_bits); final : In(1)    live: the bags that may be replayed;
                            ``num_bags`` is final
    out : Out(stream.Signature({row, weight, bag, len, last}))
    busy : Out(1)           replaying, or a lookup not yet taken from ``out``
    """

    def __init__(self, params, lanes=INTERLEAVED_BAGS):
        if not isinstance(params, EngineParams):
            raise TypeError(f"LookupBuffer params must be an EngineParams, not {params!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"LookupBuffer lanes must be a positive integer, not {lanes!r}")
        self.params, self.lanes = params, lanes
        p = params
        self.Entry = data.StructLayout({"row": p.index_width, "weight": 32})
        self.Bag = data.StructLayout({"first": p.pair_bits, "len": p.mult_bits, "bag": p.bag_bits})
        self.Lookup = data.StructLayout({"row": p.index_width, "weight": 32, "bag": p.bag_bits,
                                         "len": p.mult_bits, "last": 1})
        super().__init__({
            "start": In(1),
            "write": In(data.StructLayout({"en": 1, "row": p.index_width, "weight": 32, "bag": p.bag_bits,
                                           "first": 1, "last": 1})),
            "replay": In(1), "interleave": In(1), "num_bags": In(p.bag_count_bits), "final": In(1),
            "out": Out(stream.Signature(self.Lookup)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, G = self.params, self.lanes
        m.submodules.entries = entries = memory.Memory(shape=self.Entry, depth=p.max_lookups, init=[])
        m.submodules.bags = bags = memory.Memory(shape=self.Bag, depth=p.max_bags, init=[])
        entry_wr, entry_rd = entries.write_port(), entries.read_port()
        bag_wr, bag_rd = bags.write_port(), bags.read_port(domain="comb")

        # ---- writes: the lookups in index order, a bag entry at each bag's last lookup ----
        w = self.write
        written = Signal(range(p.max_lookups + 1))
        bags_written = Signal(range(p.max_bags + 1))
        bag_first = Signal(p.pair_bits)         # the current bag's first lookup
        first = Mux(w.first, written, bag_first)
        m.d.comb += [entry_wr.en.eq(w.en), entry_wr.addr.eq(written),
                     entry_wr.data.row.eq(w.row), entry_wr.data.weight.eq(w.weight),
                     bag_wr.en.eq(w.en & w.last), bag_wr.addr.eq(bags_written),
                     bag_wr.data.first.eq(first), bag_wr.data.len.eq(written - first + 1),
                     bag_wr.data.bag.eq(w.bag)]
        with m.If(w.en):
            m.d.sync += [written.eq(written + 1), bag_first.eq(first), bags_written.eq(bags_written + w.last)]

        # ---- replay: lanes of bags, visited round robin ------------------------------------
        Lane = data.StructLayout({"live": 1, "at": p.pair_bits, "rem": p.mult_bits, "len": p.mult_bits,
                                  "bag": p.bag_bits})
        lanes = Array(Signal(Lane, name=f"lane{i}") for i in range(G))
        turn = Signal(range(G))
        ramp = Signal(range(G))                 # rounds so far, up to G - 1: lanes past it wait
        replaying, interleave = Signal(), Signal()
        next_bag = Signal(range(p.max_bags + 1))
        m.d.comb += bag_rd.addr.eq(next_bag)
        more = (next_bag < bags_written) & (bag_rd.data.bag < self.num_bags)
        lane = lanes[turn]
        out_valid = Signal()
        out_tag = Signal(data.StructLayout({"bag": p.bag_bits, "len": p.mult_bits, "last": 1}))
        advance = ~out_valid | self.out.ready
        m.d.comb += [entry_rd.en.eq(advance),
                     self.out.valid.eq(out_valid),
                     self.out.payload.row.eq(entry_rd.data.row), self.out.payload.weight.eq(entry_rd.data.weight),
                     self.out.payload.bag.eq(out_tag.bag), self.out.payload.len.eq(out_tag.len),
                     self.out.payload.last.eq(out_tag.last)]
        with m.If(advance):
            m.d.sync += out_valid.eq(0)
            with m.If(replaying & lane.live):           # the lane's bag, its next lookup
                m.d.comb += entry_rd.addr.eq(lane.at)
                m.d.sync += [out_valid.eq(1), out_tag.bag.eq(lane.bag), out_tag.len.eq(lane.len),
                             out_tag.last.eq(lane.rem == 1),
                             lane.at.eq(lane.at + 1), lane.rem.eq(lane.rem - 1), lane.live.eq(lane.rem != 1)]
            with m.Elif(replaying & more & (turn <= ramp)):     # the next bag, its first lookup
                b = bag_rd.data
                m.d.comb += entry_rd.addr.eq(b.first)
                m.d.sync += [out_valid.eq(1), out_tag.bag.eq(b.bag), out_tag.len.eq(b.len),
                             out_tag.last.eq(b.len == 1), next_bag.eq(next_bag + 1),
                             lane.at.eq(b.first + 1), lane.rem.eq(b.len - 1), lane.len.eq(b.len),
                             lane.bag.eq(b.bag), lane.live.eq(b.len != 1)]
            with m.If(interleave):
                m.d.sync += turn.eq(Mux(turn == G - 1, 0, turn + 1))
                with m.If((turn == G - 1) & (ramp != G - 1)):
                    m.d.sync += ramp.eq(ramp + 1)
        lanes_live = Cat(*[l.live for l in lanes]).any()
        with m.If(replaying & ~lanes_live & ~more & self.final):
            m.d.sync += replaying.eq(0)
        m.d.comb += self.busy.eq(replaying | out_valid)

        with m.If(self.start):
            m.d.sync += [written.eq(0), bags_written.eq(0), replaying.eq(0)]
        with m.If(self.replay):
            m.d.sync += [replaying.eq(1), interleave.eq(self.interleave),
                         next_bag.eq(0), turn.eq(0), ramp.eq(0)]
            for l in lanes:
                m.d.sync += l.live.eq(0)
        return m
