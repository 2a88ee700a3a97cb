"""The buffer chip of a DDR4 LRDIMM with the NMP in it: the top level.

Host side (``host``, :func:`host_signature`): the command/address pins that the host memory
controller drives, one chip select per rank, and the data of a whole BL8 burst in the clock
of its first beat, as on the DRAM side (:func:`~refree.hw.ddr4.rank_controller.dfi_signature`).

Buffer latency (fixed; the host programs its latencies for it):

* commands reach the ranks one clock after the host drives them;
* write data goes with them: the host drives it CWL clocks after its WR, as for a bare
  DRAM, and it reaches the rank one clock later, CWL after the command there;
* read data reaches the host ``CL + 2`` clocks after its RD (a clock in the command path,
  a clock in the data path): :data:`READ_LATENCY_ADDED` = 2.

The NMP window (:class:`~refree.hw.lrdimm.regmap.WindowParams`: rows of one bank of one
rank) is decoded on the host's commands: an ACT of a window row, and the RD, WR and PRE
that follow it in that bank, never reach the DRAM; a RD or WR there reads or writes a burst
of the register block (:class:`~refree.hw.lrdimm.registers.WindowRegisters`), with the
latencies of an ordinary access.  The DRAM rows under the window are not reachable by the
host.  Every other host command passes through, unless the NMP owns the ranks
(:class:`~refree.hw.lrdimm.ownership.Ownership`: from the start request until hand-back):
then it is not executed; a RD returns :data:`~refree.hw.lrdimm.regmap.POISON_WORD` in every
word, a WR's data is dropped, and STATUS bit 16 and HOST_DROPPED record it.  REF, PREA and NOP
are the exceptions: the NMP refreshes and precharges the ranks while it owns them, so the
host's REF and PREA (and a NOP, which does nothing) are ignored then and not counted.

DRAM side: :class:`~refree.hw.lrdimm.nmp_core.NmpCore` (the engine on R ranks); each
rank's pins come from the host path, the hand-over sequence or the NMP's command engine.
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..ddr4.commands import A10, PINS
from ..ddr4.params import DramParams
from ..ddr4.rank_controller import BURST_BITS, dfi_signature
from .hot_row_store import HotStoreParams
from .nmp_core import NmpCore
from .ownership import Ownership
from .registers import WindowRegisters
from .regmap import POISON_WORD, RegisterMap, WindowParams, WORDS_PER_BURST

__all__ = ["LrdimmNmp", "host_signature", "READ_LATENCY_ADDED", "default_window"]

READ_LATENCY_ADDED = 2          # clocks the buffer adds to CL (write latency: none)

# where a host RD's data comes from, or what becomes of a host WR's data
_DRAM, _WINDOW, _POISON = 0, 1, 2


def host_signature(geometry, ranks):
    """The host side as the host memory controller drives it (``cs_n`` a bit per rank; the
    chip's port is its flip)."""
    pins = dfi_signature(geometry).members
    return wiring.Signature({
        "cs_n": Out(ranks, init=(1 << ranks) - 1),
        **{name: Out(pins[name].shape, init=pins[name].init) for name in
           ("act_n", "ras_n", "cas_n", "we_n", "bg", "ba", "a", "wrdata_en", "wrdata")},
        "rddata_valid": In(1), "rddata": In(BURST_BITS)})


def default_window(dram):
    """One row: the last row of the last bank of rank 0."""
    g = dram.geometry
    return WindowParams(rank=0, bg=g.bank_groups - 1, ba=g.banks_per_group - 1, row=g.rows - 1, rows=1)


class LrdimmNmp(wiring.Component):
    """The buffer chip (see the module docstring).

    Parameters
    ----------
    engine_kwargs : dict
        Of :class:`~refree.hw.engine.engine.Engine`, but ``addr_bits``.
    dram : DramParams
    window : WindowParams or None
        Default :func:`default_window`.
    hot : HotStoreParams
        The hot-row store (default: none; :mod:`~refree.hw.lrdimm.nmp_core`).

    Members
    -------
    host : In(host_signature)
    rank0 ... : Out(dfi_signature)
    """

    def __init__(self, engine_kwargs, dram=DramParams(), window=None, hot=HotStoreParams()):
        self.core = NmpCore(engine_kwargs, dram, hot)
        self.dram_params = dram
        self.mapping = m = self.core.mapping
        g = m.geometry
        window = default_window(dram) if window is None else window
        if not isinstance(window, WindowParams):
            raise ValueError(f"LrdimmNmp window must be a WindowParams, not {window!r}")
        window.check(m.ranks, g)
        self.window = window
        core = self.core
        self.regmap = RegisterMap(core.Config, core.Counters, window, g.bursts_per_row, core.engine.staging_stripe)
        self.registers = WindowRegisters(self.regmap, core.Config, core.Counters)
        self.ownership = Ownership(dram.timing)
        super().__init__({"host": In(host_signature(g, m.ranks)),
                          **{f"rank{i}": Out(dfi_signature(g)) for i in range(m.ranks)}})

    def ranks(self):
        return [getattr(self, f"rank{i}") for i in range(self.mapping.ranks)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.registers = regs = self.registers
        m.submodules.ownership = own = self.ownership
        R, W, t = self.mapping.ranks, self.window, self.dram_params.timing
        g = self.mapping.geometry
        rank_bits = max(1, (R - 1).bit_length())

        # ---- the host's command, one clock late (the buffer's command latency) -----------
        h = Signal(R, name="h_cs_n", init=(1 << R) - 1)
        pins = {name: Signal(len(getattr(self.host, name)), name=f"h_{name}",
                             init=int(name in ("act_n", "ras_n", "cas_n", "we_n")))
                for name in PINS[1:]}
        # (write data is taken CWL after its WR, as a DRAM does: wrdata_en is not needed)
        h_wrdata = Signal(BURST_BITS)
        m.d.sync += [h.eq(self.host.cs_n), h_wrdata.eq(self.host.wrdata)]
        m.d.sync += [pins[n].eq(getattr(self.host, n)) for n in pins]
        act_n, ras_n, cas_n, we_n = (pins[n] for n in ("act_n", "ras_n", "cas_n", "we_n"))
        selected = h != (1 << R) - 1
        sel_rank = Signal(rank_bits)
        for i in reversed(range(R)):
            with m.If(~h[i]):
                m.d.comb += sel_rank.eq(i)
        is_act = selected & ~act_n
        is_col = selected & act_n & ras_n & ~cas_n
        is_rd, is_wr = is_col & we_n, is_col & ~we_n
        is_pre = selected & act_n & ~ras_n & cas_n & ~we_n
        is_prea, is_pre1 = is_pre & pins["a"][A10], is_pre & ~pins["a"][A10]
        is_ref = selected & act_n & ~ras_n & ~cas_n & we_n
        is_nop = selected & act_n & ras_n & cas_n & we_n
        row = Cat(pins["a"][:14], we_n, cas_n, ras_n, pins["a"][17])
        col_burst = pins["a"][3:10]

        # ---- the window: the host's open row in the window bank ---------------------------
        win_open = Signal()
        win_row = Signal(range(max(2, W.rows)))
        win_bank = ~h[W.rank] & (pins["bg"] == W.bg) & (pins["ba"] == W.ba)
        row_in_window = (row >= W.row) & (row < W.row + W.rows)
        with m.If(is_act & win_bank):
            m.d.sync += [win_open.eq(row_in_window), win_row.eq(row - W.row)]
        with m.If((is_pre1 & win_bank) | (is_prea & ~h[W.rank])):
            m.d.sync += win_open.eq(0)
        absorbed = win_bank & ((is_act & row_in_window) | ((is_pre1 | is_col) & win_open))
        burst = Signal(range(max(2, W.rows * g.bursts_per_row)))
        m.d.comb += burst.eq(win_row * g.bursts_per_row + col_burst)
        window_col = is_col & win_bank & win_open
        forwarded = selected & ~absorbed & ~own.owned
        # (the NMP refreshes and precharges the ranks itself; a NOP does nothing)
        refused = selected & ~absorbed & own.owned & ~is_ref & ~is_prea & ~is_nop
        m.d.comb += regs.refused.eq(refused)

        # ---- where each RD's data comes from, what becomes of each WR's data ---------------
        Entry = [("valid", 1), ("kind", 2), ("rank", rank_bits), ("burst", len(burst))]
        kind = Mux(window_col, _WINDOW, Mux(forwarded, _DRAM, _POISON))

        def delay_line(name, length, valid):
            """The entry of this clock's command, ``length`` clocks later."""
            stages = [Signal(sum(w for _, w in Entry), name=f"{name}{k}") for k in range(length)]
            entry = Cat(valid, kind, sel_rank, burst)
            assert len(entry) == len(stages[0]), "an entry's fields must have their widths"
            m.d.sync += stages[0].eq(entry)
            m.d.sync += [b.eq(a) for a, b in zip(stages, stages[1:])]
            out, pos = {}, 0
            for field, w in Entry:
                out[field] = stages[-1][pos:pos + w]
                pos += w
            return out

        rd = delay_line("rd_stage", t.CL, is_rd & (forwarded | window_col | refused))
        wr = delay_line("wr_stage", t.CWL, is_wr & (forwarded | window_col))

        # read data to the host, registered: from the rank, the registers or poison
        poison = C(int.from_bytes(POISON_WORD.to_bytes(4, "little") * WORDS_PER_BURST, "little"), BURST_BITS)
        in_map = rd["burst"] < self.regmap.bursts
        rank_data = Signal(BURST_BITS)
        for i, r in enumerate(self.ranks()):
            with m.If(rd["rank"] == i):
                m.d.comb += rank_data.eq(r.rddata)
        m.d.comb += regs.rd_burst.eq(rd["burst"])
        m.d.sync += [self.host.rddata_valid.eq(rd["valid"]),
                     self.host.rddata.eq(Mux(rd["kind"] == _DRAM, rank_data,
                                         Mux(rd["kind"] == _WINDOW, Mux(in_map, regs.rd_data, 0), poison)))]
        m.d.comb += [regs.wr_en.eq(wr["valid"] & (wr["kind"] == _WINDOW) & (wr["burst"] < self.regmap.bursts)),
                     regs.wr_burst.eq(wr["burst"]), regs.wr_data.eq(h_wrdata)]

        # ---- the NMP: registers, ownership, the engine on its ranks -----------------------
        m.d.comb += [own.request.eq(regs.start), own.job_idle.eq(~core.busy & core.dram_refreshed),
                     core.hold.eq(own.hold), core.start.eq(own.engine_start), core.config.eq(regs.config),
                     regs.busy.eq(own.owned), regs.error.eq(core.error), regs.counters.eq(core.counters)]

        # ---- each rank's pins: the host's, the hand-over's or the NMP's --------------------
        for i, (ours, nmp) in enumerate(zip(self.ranks(), core.ranks())):
            host_wr = wr["valid"] & (wr["kind"] == _DRAM) & (wr["rank"] == i)
            with m.If(own.nmp_drives):
                m.d.comb += [getattr(ours, p).eq(getattr(nmp, p)) for p in PINS]
            with m.Elif(own.owned):
                # PREA: RAS_n, WE_n low, A10 high;  REF: RAS_n, CAS_n low
                m.d.comb += [ours.cs_n.eq(~(own.prea | own.ref)), ours.act_n.eq(1),
                             ours.ras_n.eq(0), ours.cas_n.eq(own.prea), ours.we_n.eq(own.ref),
                             ours.a.eq(Mux(own.prea, 1 << A10, 0))]
            with m.Else():
                m.d.comb += [ours.cs_n.eq(h[i] | ~forwarded)]
                m.d.comb += [getattr(ours, p).eq(pins[p]) for p in PINS[1:]]
            m.d.comb += [ours.wrdata_en.eq(host_wr | (nmp.wrdata_en & own.nmp_drives)),
                         ours.wrdata.eq(Mux(host_wr, h_wrdata, nmp.wrdata)),
                         nmp.rddata_valid.eq(ours.rddata_valid & own.nmp_drives), nmp.rddata.eq(ours.rddata)]
        return m
