"""The NMP engine on real DRAM: :class:`~refree.hw.engine.engine.Engine` with its memory
port on the :class:`~refree.hw.ddr4.dram_side.DramSide` of R DDR4 ranks.

This is the buffer chip without its host side: jobs are started through ``start`` and
``config`` as on the bare engine, and every byte the engine reads or writes goes through
the ranks' DDR4 command engines under the timing of the speed grade.  The engine's
addresses are the DRAM's beat addresses (:class:`~refree.hw.ddr4.mapping.AddressMapping`),
so its memory-map check (``ACCESS_OUTSIDE_TABLES``) bounds them by the ranks' capacity.

With a hot-row store (``hot``, :class:`~refree.hw.lrdimm.hot_row_store.HotStoreParams`),
the store sits between the engine's memory port and the DRAM side, and the configuration
has three fields more after the engine's: ``hot_job`` (what ``start`` starts: the engine,
a load of the ``hot_count`` beat addresses listed from ``hot_list``, or a flush), and the
counters the store's four after the engine's.  A job starts once the engine and the store
are both idle (``busy`` from the start).
"""
from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..ddr4.dram_side import DramSide
from ..ddr4.params import DramParams
from ..ddr4.rank_controller import dfi_signature
from ..engine.engine import Engine
from .hot_row_store import HOT_JOB_ENGINE, HOT_JOB_FLUSH, HOT_JOB_LOAD, HotRowStore, HotStoreParams, order_depth

__all__ = ["NmpCore"]


class NmpCore(wiring.Component):
    """Engine + DRAM side.

    Parameters
    ----------
    engine_kwargs : dict
        Arguments of :class:`Engine` but ``addr_bits`` and ``staging_stripe`` (the mapping's).
    dram : DramParams
    hot : HotStoreParams (default: none)

    Members
    -------
    start, config, error, counters :
        Those of the engine (with a hot-row store, ``Config`` and ``Counters`` have the
        store's fields after the engine's, and ``error`` is a load's after a load job).
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

    def __init__(self, engine_kwargs, dram=DramParams(), hot=HotStoreParams()):
        if not isinstance(dram, DramParams):
            raise ValueError(f"NmpCore dram must be a DramParams, not {dram!r}")
        if not isinstance(hot, HotStoreParams):
            raise ValueError(f"NmpCore hot must be a HotStoreParams, not {hot!r}")
        mapping = dram.mapping
        self.engine = Engine(**engine_kwargs, addr_bits=mapping.addr_bits, staging_stripe=mapping.staging_stripe)
        self.dram = DramSide(dram.timing, mapping, **dram.controller_kwargs())
        self.mapping = mapping
        e, d = self.engine, self.dram
        self.Config, self.Counters, self.store = e.Config, e.Counters, None
        if hot.enabled:
            A = mapping.addr_bits
            # (every read the DRAM side holds, and the store's own hits, may be in flight)
            self.store = HotRowStore(A, hot.beats, hot.ways, reads_in_flight=order_depth(d.reads_in_flight))
            self.Config = data.StructLayout({**{name: f.shape for name, f in e.Config},
                                             "hot_job": 2, "hot_list": A, "hot_count": 32})
            self.Counters = data.StructLayout({**{name: f.shape for name, f in e.Counters},
                                               **{f"hot_{name}": f.shape for name, f in HotRowStore.Counters}})
        super().__init__({
            "start": In(1), "hold": In(1), "config": In(self.Config), "busy": Out(1), "error": Out(8),
            "counters": Out(self.Counters),
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
        for ours, theirs in zip(self.ranks(), d.ranks()):
            wiring.connect(m, wiring.flipped(ours), theirs)
        m.d.comb += [e.config.eq(self.config.as_value()[:e.Config.size]),
                     self.counters.as_value()[:e.Counters.size].eq(e.counters),
                     self.dram_stats.eq(d.stats), self.dram_idle.eq(d.idle),
                     self.dram_all_closed.eq(d.all_closed), self.dram_refreshed.eq(d.refreshed)]
        if self.store is None:
            wiring.connect(m, e.mem, d.port)
            m.d.comb += [e.start.eq(self.start), self.busy.eq(e.busy | ~d.idle), self.error.eq(e.error)]
            return m
        # (not held in reset with the DRAM side: the hot set stays on chip from job to job)
        m.submodules.store = s = self.store
        wiring.connect(m, e.mem, s.up)
        wiring.connect(m, s.down, d.port)
        cfg = self.config
        # A start waits until the engine and the store are idle (the store clears its tags
        # after reset, a set a cycle), busy meanwhile; the registers hold the configuration.
        pending, last_job = Signal(), Signal(2)     # (last_job: its error is the chip's)
        go = (self.start | pending) & ~e.busy & ~s.busy
        with m.If(go):
            m.d.sync += [pending.eq(0), last_job.eq(cfg.hot_job)]
        with m.Elif(self.start):
            m.d.sync += pending.eq(1)
        m.d.comb += [e.start.eq(go & (cfg.hot_job == HOT_JOB_ENGINE)),
                     s.load.eq(go & (cfg.hot_job == HOT_JOB_LOAD)),
                     s.flush.eq(go & (cfg.hot_job == HOT_JOB_FLUSH)),
                     s.list_addr.eq(cfg.hot_list), s.count.eq(cfg.hot_count),
                     self.busy.eq(e.busy | s.busy | ~d.idle | pending),
                     self.error.eq(Mux(last_job == HOT_JOB_ENGINE, e.error,
                                       Mux(last_job == HOT_JOB_LOAD, s.error, 0))),
                     self.counters.as_value()[e.Counters.size:].eq(s.counters)]
        return m
