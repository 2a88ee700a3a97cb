"""Memory map check: step 0 of a job, before anything is read.

Every table's rows lie in memory and do not overlap each other (a stride of at least D/16
beats, no two descriptors sharing a beat), and no staging array the job reads or writes
(offsets, indices, weights; the pooled output in forward, the upstream gradient in
backward; with ``stale_list``, a backward job's list of stale rows) runs past memory or
shares a beat with a table; else the engine refuses the job with ``ACCESS_OUTSIDE_TABLES``
(docs/design.md section 4).

Regions ``[lo, hi)`` in beats: 0 .. max_tables-1 are the tables (live when ``t < T`` and
the table has rows), then the four (five) staging arrays (live when not empty).  The check
walks the pairs (table i, region j), i < T, j over every region but i itself, one pair a
cycle: ``T * (max_tables + 4)`` cycles for a job that passes (``+ 5`` with the list).  A
table is checked against the staging arrays and every other table; a staging array against
every table (never against another staging array: the host may place them as it likes).

Members
-------
config : In(Config)         the engine's job configuration (held during the walk)
forward : In(1)             the job writes the pooled output (else reads the gradient)
restart : In(1)             the walk goes back to the first pair (in the next cycle)
step : In(1)                the walk moves to the next pair (in the next cycle)
conflict : Out(1)           the current pair overlaps, or a region runs past memory
last : Out(1)               the current pair is the walk's last

Latency: ``conflict`` and ``last`` are combinational in the current pair and the config.
Reset: the first pair.
"""
from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .memport import array_beats
from .params import counter_signal
from .staging import staging_beats

__all__ = ["MemoryMapCheck"]

STAGING_ARRAYS = 4      # offsets, indices, weights, the pooled output or the gradient


class MemoryMapCheck(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    config_layout : the engine's ``Config`` layout
    max_tables : int
    addr_bits : int     beat address width: memory ends at ``2 ** addr_bits`` beats
    beats : int         beats of a row (D / 16)
    stripe : int        the staging rows' stripe (:mod:`.staging`)
    stale_list : bool   the config has ``stale_addr`` and ``stale_count`` (int64 entries)
    """

    def __init__(self, config_layout, max_tables, addr_bits, beats, stripe=1, stale_list=False):
        self.max_tables, self.addr_bits, self.beats, self.stripe = max_tables, addr_bits, beats, stripe
        self.stale_list = stale_list
        self.num_regions = max_tables + STAGING_ARRAYS + stale_list
        super().__init__({"config": In(config_layout), "forward": In(1), "restart": In(1), "step": In(1),
                          "conflict": Out(1), "last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg, A, beats = self.config, self.addr_bits, self.beats
        T, B, n_idx = cfg.num_tables, cfg.batch_size, cfg.num_indices
        ci = counter_signal(self.max_tables)    # the table
        cj = Signal(range(self.num_regions))    # the region it is checked against
        RW = A + 48                             # wide enough for any end address

        def table_region(i):
            d = cfg.tables[i]
            return d.base, d.base + d.rows * d.stride, (i < T) & (d.rows != 0)
        job_out = Mux(self.forward, cfg.pooled_addr, cfg.grad_addr)
        staging = [(cfg.offsets_addr, cfg.offsets_addr + array_beats(T * B + 1, cfg.offsets_int32), C(1, 1)),
                   (cfg.indices_addr, cfg.indices_addr + array_beats(n_idx, cfg.indices_int32), n_idx != 0),
                   (cfg.weights_addr, cfg.weights_addr + array_beats(n_idx, True), cfg.weighted & (n_idx != 0)),
                   (job_out, job_out + staging_beats(T * B, beats, self.stripe), T * B != 0)]
        if self.stale_list:
            n_stale = cfg.stale_count
            staging.append((cfg.stale_addr, cfg.stale_addr + array_beats(n_stale, False),
                            ~self.forward & (n_stale != 0)))
        i_lo, i_hi, i_live = Signal(RW), Signal(RW), Signal()
        j_lo, j_hi, j_live = Signal(RW), Signal(RW), Signal()
        lo_, hi_, live_ = table_region(ci)
        m.d.comb += [i_lo.eq(lo_), i_hi.eq(hi_), i_live.eq(live_)]
        with m.Switch(cj):
            for j in range(self.num_regions):
                with m.Case(j):
                    lo_, hi_, live_ = table_region(j) if j < self.max_tables else staging[j - self.max_tables]
                    m.d.comb += [j_lo.eq(lo_), j_hi.eq(hi_), j_live.eq(live_ & (cj != ci))]
        end_of_memory = 1 << A
        m.d.comb += [
            self.conflict.eq((i_live & ((i_hi > end_of_memory) | (cfg.tables[ci].stride < beats)))
                             | (j_live & (j_hi > end_of_memory))
                             | (i_live & j_live & (i_lo < j_hi) & (j_lo < i_hi))),
            # (tables from T on are not live: no pair to check)
            self.last.eq((cj == self.num_regions - 1) & ~(ci + 1 < T)),
        ]
        with m.If(self.restart):
            m.d.sync += [ci.eq(0), cj.eq(0)]
        with m.Elif(self.step & (cj != self.num_regions - 1)):
            m.d.sync += cj.eq(cj + 1)
        with m.Elif(self.step):
            m.d.sync += [ci.eq(ci + 1), cj.eq(0)]
        return m
