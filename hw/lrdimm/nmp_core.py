"""The NMP engine on real DRAM: :class:`~refree.hw.engine.engine.Engine` with its memory
port on the :class:`~refree.hw.ddr4.dram_side.DramSide` of R DDR4 ranks.

This is the buffer chip without its host side: jobs are started through ``start`` and
``config`` as on the bare engine, and every byte the engine reads or writes goes through
the ranks' DDR4 command engines under the timing of the speed grade.  The engine's
addresses are the DRAM's beat addresses (:class:`~refree.hw.ddr4.mapping.AddressMapping`),
so its memory-map check (``ACCESS_OUTSIDE_TABLES``) bounds them by the ranks' capacity.
"""
from amaranth.hdl import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..ddr4.dram_side import DramSide
from ..ddr4.params import DramParams
from ..ddr4.rank_controller import dfi_signature
from ..engine.engine import Engine

__all__ = ["NmpCore"]


class NmpCore(wiring.Component):
    """Engine + DRAM side.

    Parameters
    ----------
    engine_kwargs : dict
        Arguments of :class:`Engine` but ``addr_bits`` and ``staging_stripe`` (the mapping's).
    dram : DramParams

    Members
    -------
    start, config, error, counters :
        Those of the engine.
    hold : In(1)
        Hold the DRAM side in reset (while the host owns the ranks, see
        :mod:`~refree.hw.lrdimm.ownership`): its command engines start again with every
        bank precharged and no refresh owed.
    busy : Out(1)
        The engine is busy or the DRAM side still holds requests or data: when it falls,
        every write of the job is in DRAM.
    rank0 ... : Out(dfi_signature)
    dram_stats : Out(ArrayLayout(RankController.Stats, R))
    dram_idle, dram_all_closed, dram_refreshed : Out(1)
        Those of the DRAM side (``refreshed``: no rank owes a REF).
    """

    def __init__(self, engine_kwargs, dram=DramParams()):
        if not isinstance(dram, DramParams):
            raise ValueError(f"NmpCore dram must be a DramParams, not {dram!r}")
        mapping = dram.mapping
        self.engine = Engine(**engine_kwargs, addr_bits=mapping.addr_bits, staging_stripe=mapping.staging_stripe)
        self.dram = DramSide(dram.timing, mapping, **dram.controller_kwargs())
        self.mapping = mapping
        e, d = self.engine, self.dram
        super().__init__({
            "start": In(1), "hold": In(1), "config": In(e.Config), "busy": Out(1), "error": Out(8),
            "counters": Out(e.Counters),
            **{f"rank{i}": Out(dfi_signature(mapping.geometry)) for i in range(mapping.ranks)},
            "dram_stats": Out(d.stats.shape()), "dram_idle": Out(1), "dram_all_closed": Out(1),
            "dram_refreshed": Out(1)})

    def ranks(self):
        return [getattr(self, f"rank{i}") for i in range(self.mapping.ranks)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        d = self.dram
        m.submodules.dram = ResetInserter(self.hold)(d)
        wiring.connect(m, e.mem, d.port)
        for ours, theirs in zip(self.ranks(), d.ranks()):
            wiring.connect(m, wiring.flipped(ours), theirs)
        m.d.comb += [e.start.eq(self.start), e.config.eq(self.config), self.busy.eq(e.busy | ~d.idle),
                     self.error.eq(e.error), self.counters.eq(e.counters),
                     self.dram_stats.eq(d.stats), self.dram_idle.eq(d.idle),
                     self.dram_all_closed.eq(d.all_closed), self.dram_refreshed.eq(d.refreshed)]
        return m
