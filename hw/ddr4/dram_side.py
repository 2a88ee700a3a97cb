"""The DRAM side of the buffer chip: the engine's memory port spread over R ranks, each with
its own command engine and data path (the RecNMP assumption: every rank of the LRDIMM has
its own path to the NMP, so the ranks transfer in parallel).

A beat address is split by :class:`~refree.hw.ddr4.mapping.AddressMapping` (a permutation
of address bits, no logic) into its rank and its place in the rank.  Commands go to their
rank's :class:`~refree.hw.ddr4.rank_controller.RankController` in port order, through a
queue of ``RANK_QUEUE`` requests in front of each rank, so that a rank whose window is full
(its rows waiting for their banks) does not stop the commands to the others: measured on
the Meta-calibrated trace at R = 4, B = 128, `baseline` forward 18,647 -> 16,917 cycles,
backward 62,290 -> 57,304.  Cost: ``RANK_QUEUE`` requests of ~560 bits per rank.  Read
responses come back in port order: a queue of the ranks of the reads in flight says whose
response is next, and each rank keeps its read bursts in its own response buffer until then
(no deadlock: the oldest read in flight is always at the front of its rank).
"""
from amaranth.hdl import Cat, Module
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from ..engine.memport import mem_port
from .mapping import AddressMapping
from .rank_controller import RankController, dfi_signature
from .timing import Timing

__all__ = ["DramSide"]

RANK_QUEUE = 16     # requests queued in front of each rank's window


class DramSide(wiring.Component):
    """R ranks behind one memory port.

    Parameters
    ----------
    timing : Timing
    mapping : AddressMapping
        Ranks, chunk and geometry; the port's address width is ``mapping.addr_bits``.
    **controller :
        ``window``, ``read_depth``, ``write_high``, ``write_low``, ``postpone_limit`` of
        every :class:`RankController` (its defaults where not given).
    reads_in_flight : int
        Reads the port may have in flight over all ranks (the rank queue's depth), 4 to 256;
        default ``R * read_depth``.

    Members
    -------
    port : In(mem_port(addr_bits))   the engine's side (commands in, responses out)
    rank0 ... : Out(dfi_signature)   one per rank
    idle : Out(1)                    every rank idle, no response waiting
    all_closed : Out(1)              every bank of every rank precharged
    refreshed : Out(1)               no rank owes a REF
    stats : Out(ArrayLayout(Stats, R))
    """

    def __init__(self, timing, mapping=AddressMapping(), *, reads_in_flight=None, **controller):
        if not isinstance(timing, Timing):
            raise ValueError(f"DramSide timing must be a Timing, not {timing!r}")
        if not isinstance(mapping, AddressMapping):
            raise ValueError(f"DramSide mapping must be an AddressMapping, not {mapping!r}")
        R = mapping.ranks
        self.controllers = [RankController(timing, mapping.geometry, **controller) for _ in range(R)]
        read_depth = self.controllers[0].read_depth
        reads_in_flight = R * read_depth if reads_in_flight is None else reads_in_flight
        if isinstance(reads_in_flight, bool) or not isinstance(reads_in_flight, int) \
                or not 4 <= reads_in_flight <= 256:
            raise ValueError(f"DramSide reads_in_flight must be an integer in [4, 256], "
                             f"not {reads_in_flight!r}")
        self.timing, self.mapping = timing, mapping
        self.reads_in_flight = reads_in_flight
        self.addr_bits = mapping.addr_bits
        Stats = self.controllers[0].Stats
        super().__init__({
            "port": In(mem_port(self.addr_bits)),
            **{f"rank{i}": Out(dfi_signature(mapping.geometry)) for i in range(R)},
            "idle": Out(1), "all_closed": Out(1), "refreshed": Out(1),
            "stats": Out(data.ArrayLayout(Stats, R))})

    def ranks(self):
        return [getattr(self, f"rank{i}") for i in range(self.mapping.ranks)]

    def elaborate(self, platform):
        m = Module()
        R = self.mapping.ranks
        rank_bits = max(1, (R - 1).bit_length())
        off = self.mapping.offsets()
        ctrls = self.controllers
        for i, c in enumerate(ctrls):
            m.submodules[f"rank{i}"] = c
            wiring.connect(m, c.dfi, wiring.flipped(self.ranks()[i]))
            m.d.comb += self.stats[i].eq(c.stats)

        # ---- commands: split the address, go to the rank --------------------------------
        cmd = self.port.cmd
        a = cmd.payload.addr

        def field(name):
            o, w = off[name]
            return a[o:o + w]

        rank = field("rank") if R > 1 else 0
        burst = Cat(field("col_lo"), field("col_hi"))
        bg = Cat(field("bg0"), field("bg_hi"))
        m.submodules.order = order = fifo.SyncFIFOBuffered(width=rank_bits, depth=self.reads_in_flight)
        queues = []
        for i, c in enumerate(ctrls):
            # (each rank's requests queue in front of it, so that one rank's full window
            # does not stop the commands to the others)
            req = c.req.payload
            m.submodules[f"queue{i}"] = q = fifo.SyncFIFOBuffered(width=len(req.as_value()), depth=RANK_QUEUE)
            queues.append(q)
            queued = data.View(req.shape(), q.w_data)
            m.d.comb += [queued.loc.burst.eq(burst), queued.loc.bg.eq(bg),
                         queued.loc.ba.eq(field("ba")), queued.loc.row.eq(field("row")),
                         queued.write.eq(cmd.payload.write), queued.data.eq(cmd.payload.data),
                         c.req.valid.eq(q.r_rdy), req.eq(q.r_data), q.r_en.eq(c.req.ready)]
            with m.If(rank == i):
                ok = cmd.payload.write | order.w_rdy
                m.d.comb += [q.w_en.eq(cmd.valid & ok), cmd.ready.eq(q.w_rdy & ok)]
        m.d.comb += [order.w_en.eq(cmd.valid & cmd.ready & ~cmd.payload.write),
                     order.w_data.eq(rank)]

        # ---- responses: from the rank of the oldest read ---------------------------------
        rsp = self.port.rsp
        for i, c in enumerate(ctrls):
            with m.If(order.r_rdy & (order.r_data == i)):
                m.d.comb += [rsp.valid.eq(c.rsp.valid), rsp.payload.eq(c.rsp.payload),
                             c.rsp.ready.eq(rsp.ready)]
        m.d.comb += order.r_en.eq(rsp.valid & rsp.ready)
        m.d.comb += [self.idle.eq(Cat(*[c.idle & ~c.rsp.valid for c in ctrls]).all() & ~order.r_rdy
                                  & Cat(*[q.level == 0 for q in queues]).all()),
                     self.all_closed.eq(Cat(*[c.all_closed for c in ctrls]).all()),
                     self.refreshed.eq(Cat(*[c.refreshed for c in ctrls]).all())]
        return m
