"""Who drives the ranks: the host (through the buffer) or the NMP, and the hand-over between.

DDR4 has no way to tell the host to wait, and the NMP's command engines know nothing of the
commands the host issued before a job.  So each hand-over is a fixed sequence that is legal
whatever the other side did last:

1. guard: ``guard`` clocks of deselect, long enough for every constraint that the last
   command of the side that is leaving can put on a PREA or REF (tRFC after a REF, tRAS
   after an ACT, write recovery after a WR, tRTP after a RD, tRP after a PRE), and for
   write data still due to reach the ranks;
2. PREA to every rank, then tRP;
3. REF to every rank, then tRFC: the side that takes over starts with every bank
   precharged and a full refresh budget (the next REF due a tREFI later);
4. the new side owns the ranks.

Take-over starts with the host's start request, and ends by releasing the DRAM side's
command engines (held in reset while the host owns the ranks) and starting the engine.
Hand-back starts when the engine and the DRAM side are idle and no rank owes a REF: the
REFs the NMP postponed are paid before the host takes over (the host must likewise owe none
when it starts a job, as the take-over's one REF only covers the current tREFI).  ``owned`` is high from the
start request until hand-back is complete: that is STATUS.busy, and while it is high host
commands outside the window are not executed.
"""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..ddr4.timing import Timing

__all__ = ["Ownership", "guard_clocks", "handover_clocks"]


def guard_clocks(timing):
    """Deselect clocks before a hand-over's PREA (step 1 of the module docstring)."""
    t = timing
    return max(t.tRFC, t.tRAS, t.wr_to_pre, t.tRTP, t.tRP, t.CL + t.burst_clocks) + 1


def handover_clocks(timing):
    """Clocks of one hand-over, from the clock of its start (the request, the job's end) to
    the new side's first command."""
    return guard_clocks(timing) + timing.tRP + timing.tRFC + 1


class Ownership(wiring.Component):
    """Members
    -------
    request : In(1)        the host's start request (ignored while ``owned``)
    job_idle : In(1)       the engine and the DRAM side are idle, no REF owed
    owned : Out(1)         the NMP owns the ranks (STATUS.busy)
    nmp_drives : Out(1)    the DRAM side's command engines drive the ranks
    hold : Out(1)          hold the DRAM side in reset
    prea, ref : Out(1)     drive PREA / REF to every rank this clock
    engine_start : Out(1)  start the engine (one clock)
    """

    def __init__(self, timing):
        if not isinstance(timing, Timing):
            raise ValueError(f"Ownership timing must be a Timing, not {timing!r}")
        self.timing = timing
        super().__init__({"request": In(1), "job_idle": In(1), "owned": Out(1), "nmp_drives": Out(1),
                          "hold": Out(1, init=1), "prea": Out(1), "ref": Out(1), "engine_start": Out(1)})

    def elaborate(self, platform):
        m = Module()
        t = self.timing
        wait = Signal(range(max(guard_clocks(t), t.tRFC, t.tRP) + 1))
        m.d.sync += wait.eq(wait - (wait != 0))

        def sequence(prefix, done_state):
            with m.State(f"{prefix}_GUARD"):
                with m.If(wait == 0):
                    m.d.comb += self.prea.eq(1)
                    m.d.sync += wait.eq(t.tRP - 1)
                    m.next = f"{prefix}_PRECHARGE"
            with m.State(f"{prefix}_PRECHARGE"):
                with m.If(wait == 0):
                    m.d.comb += self.ref.eq(1)
                    m.d.sync += wait.eq(t.tRFC - 1)
                    m.next = f"{prefix}_REFRESH"
            with m.State(f"{prefix}_REFRESH"):
                with m.If(wait == 0):
                    done_state()

        with m.FSM() as fsm:
            with m.State("HOST"):
                with m.If(self.request):
                    m.d.sync += wait.eq(guard_clocks(t) - 1)
                    m.next = "TAKE_GUARD"

            def started():
                m.d.comb += self.engine_start.eq(1)
                m.d.sync += [self.hold.eq(0), wait.eq(1)]
                m.next = "RUN"
            sequence("TAKE", started)

            with m.State("RUN"):
                m.d.comb += self.nmp_drives.eq(1)
                # (a clock for the engine's busy to rise after its start)
                with m.If((wait == 0) & self.job_idle):
                    m.d.sync += [self.hold.eq(1), wait.eq(guard_clocks(t) - 1)]
                    m.next = "GIVE_GUARD"

            def given():
                m.next = "HOST"
            sequence("GIVE", given)
        m.d.comb += self.owned.eq(~fsm.ongoing("HOST"))
        return m
