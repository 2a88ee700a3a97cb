"""A host memory controller in front of the buffer chip, clock by clock: it turns burst
reads and writes (DRAM staging, tables, the NMP window) into legal DDR4 command sequences
on the host pins of :class:`~refree.hw.lrdimm.lrdimm_nmp.LrdimmNmp`, and refreshes the
ranks while it owns them.

Scheduling is in order, one access at a time, open-row: PRE if another row is open in the
bank, ACT, then RD or WR, each at the first clock every timing rule allows.  The rules are
those of :class:`~refree.verif.ddr4_model.Ddr4RankModel`: the driver keeps one model per
rank of what it issued (:meth:`Ddr4RankModel.earliest` says when a command may go) and that
model checks the driver itself (:attr:`HostDriver.violations`).  Between ranks, which share
the host's data bus, a column command to another rank waits a burst plus one clock
(``tRTRS`` = 1) and a write-to-read turnaround as in one rank; a WR after a RD of any rank
waits ``READ_LATENCY_ADDED`` clocks more than a bare rank's read-to-write.

Latencies are the buffer's: write data CWL clocks after the WR, read data
``CL + READ_LATENCY_ADDED`` after the RD; data arriving at any other clock is an error.

The protocol around a job (what a host driver of the chip must do): close every bank but
the window's (the NMP precharges all banks when it takes the ranks over and hands them back
precharged), owe no REF (this driver refreshes on time), write the configuration and
CONTROL through the window, stop refreshing, poll STATUS until busy is clear, then refresh
again on the host's own schedule.
"""
from collections import deque
from dataclasses import dataclass

from refree.hw.ddr4.commands import PINS, encode
from refree.hw.lrdimm.lrdimm_nmp import READ_LATENCY_ADDED
from .ddr4_model import Ddr4RankModel, RULE_REFRESH_OVERDUE

__all__ = ["HostDriver", "Access"]


@dataclass
class Access:
    """One burst access; ``data`` (an int, byte 0 in the low bits) is filled in when a read
    completes, and ``done`` set."""
    write: bool
    rank: int
    bg: int
    ba: int
    row: int
    col: int
    data: int = 0
    done: bool = False
    issued: int = -1                # cycle of its RD or WR
    completed: int = -1             # cycle its data was on the bus


class HostDriver:
    """Parameters: ``timing`` (a Timing), ``geometry``, ``ranks``; ``window`` (a
    WindowParams: where :meth:`window` accesses go)."""

    def __init__(self, timing, geometry, ranks, window):
        self.timing, self.geometry, self.ranks, self.win = timing, geometry, ranks, window
        self.models = [Ddr4RankModel(timing, geometry) for _ in range(ranks)]
        self.open = [{} for _ in range(ranks)]         # (bg, ba) -> open row
        self.queue = deque()
        self.refresh = True
        self.next_ref = timing.tREFI
        self.refreshing = None              # the PREA/REF sequence in progress
        self.writes = deque()               # (cycle its data is due, data)
        self.reads = deque()                # (cycle its data is due, Access)
        self.last_cas = None                # (cycle, rank, write)
        self.last_burst = None              # (clock after it, rank, write) on the data bus
        self.errors = []

    # -- accesses ----------------------------------------------------------------------

    def access(self, write, rank, bg, ba, row, col, data=0):
        a = Access(write, rank, bg, ba, row, col, data)
        self.queue.append(a)
        return a

    def window(self, write, burst, data=0):
        """A burst of the NMP window (register burst ``burst``)."""
        w = self.win
        per_row = self.geometry.bursts_per_row
        return self.access(write, w.rank, w.bg, w.ba, w.row + burst // per_row, 8 * (burst % per_row), data)

    def command(self, name, rank, bg=0, ba=0):
        """Queue one command (PRE, PREA, REF or NOP: a NOP with the rank's chip select low),
        issued in order when its rules allow."""
        if name not in ("PRE", "PREA", "REF", "NOP"):
            raise ValueError(f"HostDriver.command takes PRE, PREA, REF or NOP, not {name!r}")
        self.queue.append((name, rank, bg, ba))

    def close_banks(self):
        """Queue a PRE of every open bank but the window's (before a job's start)."""
        w = self.win
        for rank in range(self.ranks):
            for (bg, ba) in list(self.open[rank]):
                if (rank, bg, ba) != (w.rank, w.bg, w.ba):
                    self.command("PRE", rank, bg, ba)

    def stop_refresh(self):
        """The NMP refreshes the ranks from the start of a job (see the module docstring)."""
        self.refresh = False

    def resume_refresh(self, cycle):
        """The ranks are the host's again at ``cycle``; the NMP's last REF is behind them."""
        self.refresh, self.next_ref = True, cycle + self.timing.tREFI

    @property
    def idle(self):
        return not self.queue and not self.writes and not self.reads

    @property
    def violations(self):
        """Rules the driver broke (the refresh rule is the DRAM side's during a job)."""
        return [v for m in self.models for v in m.violations if v.rule != RULE_REFRESH_OVERDUE]

    # -- the clock ---------------------------------------------------------------------

    def tick(self, cycle):
        """Clock ``cycle``: ``(rank, CommandPins or None, wrdata_en, wrdata)``, what the host
        drives."""
        wren, wrdata = 0, 0
        if self.writes and self.writes[0][0] == cycle:
            wren, wrdata = 1, self.writes.popleft()[1]
        rank, pins = self._command(cycle)
        return rank, pins, wren, wrdata

    def receive(self, cycle, valid, data):
        """The host's read-data pins in clock ``cycle``."""
        due = bool(self.reads) and self.reads[0][0] == cycle
        if bool(valid) != due:
            self.errors.append(f"cycle {cycle}: " + ("read data without a read" if valid else
                                                     "no read data at CL + buffer latency"))
        if due:
            _, a = self.reads.popleft()
            a.data, a.done, a.completed = int(data), True, cycle

    # -- scheduling --------------------------------------------------------------------

    def _issue(self, cycle, rank, name, bg=0, ba=0, row=0, col=0):
        m = self.models[rank]
        args = {"ACT": (bg, ba, row), "RD": (bg, ba, col), "WR": (bg, ba, col), "PRE": (bg, ba)}.get(name, ())
        if name == "WR":
            m.wr(cycle, bg, ba, col, bytes(64))
        elif name != "NOP":
            m.issue(cycle, name, *args)
        if name == "ACT":
            self.open[rank][bg, ba] = row
        elif name == "PRE":
            self.open[rank].pop((bg, ba), None)
        elif name == "PREA":
            self.open[rank].clear()
        return rank, encode(name, bg, ba, row, col)

    def _ready(self, cycle, rank, name, bg=None, ba=None):
        return cycle >= self.models[rank].earliest(name, bg, ba)

    def _command(self, cycle):
        t = self.timing
        if self.refreshing is None and self.refresh and cycle >= self.next_ref and \
                (not self.queue or isinstance(self.queue[0], Access)):
            # between accesses: PREA to the ranks with a bank open, then REF to every rank
            self.refreshing = deque([("PREA", r) for r in range(self.ranks) if self.open[r]]
                                    + [("REF", r) for r in range(self.ranks)])
        if self.refreshing:
            name, rank = self.refreshing[0]
            if not self._ready(cycle, rank, name):
                return None, None
            self.refreshing.popleft()
            if not self.refreshing:
                self.refreshing, self.next_ref = None, self.next_ref + t.tREFI
            return self._issue(cycle, rank, name)
        if not self.queue:
            return None, None
        op = self.queue[0]
        if not isinstance(op, Access):          # (name, rank, bg, ba): see command()
            name, rank, bg, ba = op
            if name == "NOP" or self._ready(cycle, rank, name, bg, ba):
                self.queue.popleft()
                return self._issue(cycle, rank, name, bg, ba)
            return None, None
        a, opened = op, self.open[op.rank].get((op.bg, op.ba))
        if opened is not None and opened != a.row:
            if self._ready(cycle, a.rank, "PRE", a.bg, a.ba):
                return self._issue(cycle, a.rank, "PRE", a.bg, a.ba)
            return None, None
        if opened is None:
            if self._ready(cycle, a.rank, "ACT", a.bg, a.ba):
                return self._issue(cycle, a.rank, "ACT", a.bg, a.ba, a.row)
            return None, None
        name = "WR" if a.write else "RD"
        if not self._ready(cycle, a.rank, name, a.bg, a.ba) or not self._bus_free(cycle, a):
            return None, None
        self.queue.popleft()
        a.issued = cycle
        self.last_cas = (cycle, a.rank, a.write)
        self._check_bus(cycle, a)
        if a.write:
            self.writes.append((cycle + t.CWL, a.data))
            a.done, a.completed = True, cycle + t.CWL
        else:
            self.reads.append((cycle + t.CL + READ_LATENCY_ADDED, a))
        return self._issue(cycle, a.rank, name, a.bg, a.ba, col=a.col)

    def _check_bus(self, cycle, a):
        """The host's data bus, checked apart from the scheduling rules that should keep it
        (an error if not): a burst holds it ``burst_clocks``; a write burst starts at least 2
        clocks after a read burst (turnaround and write preamble, as a bare rank's
        ``rd_to_wr`` leaves), and bursts of two ranks are at least a clock apart (tRTRS)."""
        t = self.timing
        start = cycle + (t.CWL if a.write else t.CL + READ_LATENCY_ADDED)
        if self.last_burst is not None:
            end, rank, write = self.last_burst
            need = 2 if a.write and not write else int(rank != a.rank)
            if start - end < need:
                self.errors.append(f"cycle {cycle}: host data bus: the {'WR' if a.write else 'RD'}'s "
                                   f"data {start - end} clocks after the last burst, {need} needed")
        self.last_burst = (start + t.burst_clocks, a.rank, a.write)

    def _bus_free(self, cycle, a):
        """The host's data bus, beyond each rank's own rules (its model's): between ranks a
        burst + 1 clock (tRTRS = 1) and the WR-to-RD turnaround; a WR after a RD of any
        rank waits ``READ_LATENCY_ADDED`` clocks more than the rank's RD-to-WR, as the
        buffer brings read data that much later than a bare rank."""
        if self.last_cas is None:
            return True
        t = self.timing
        last, last_rank, last_write = self.last_cas
        gap = 0 if last_rank == a.rank else t.burst_clocks + 1
        if a.write and not last_write:
            gap = max(gap, t.rd_to_wr + READ_LATENCY_ADDED)
        elif last_write and not a.write and last_rank != a.rank:
            gap = max(gap, t.wr_to_rd_s)
        return cycle - last >= gap

def pins_word(rank, pins, ranks, widths):
    """The packed ``host_cmd`` word of :class:`~refree.verif.lrdimm_top.LrdimmSimTop`:
    ``cs_n`` (a bit per rank, low for ``rank``), then the other pins of :data:`PINS`."""
    if pins is None:
        return (1 << ranks) - 1 | _rest(encode("NOP"), ranks, widths)
    cs = ((1 << ranks) - 1) & ~(1 << rank)
    return cs | _rest(pins, ranks, widths)


def _rest(pins, ranks, widths):
    word, pos = 0, ranks
    for name in PINS[1:]:
        word |= getattr(pins, name) << pos
        pos += widths[name]
    return word
