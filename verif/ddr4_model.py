"""Transaction-level model of one DDR4 rank: a numpy backing store and a rule table of timing
constraints checked on every command (in the manner of LiteDRAM's DDR timing checker).

A testbench (or a monitor of the command bus) calls one method per command with the clock
cycle on which the command is on the bus: :meth:`Ddr4RankModel.act`, ``rd``, ``wr``,
``pre``, ``prea`` and ``ref`` (or :meth:`Ddr4RankModel.issue` with the command's name).
RD and WR have no auto-precharge (RDA/WRA are not modelled).  Every command is checked
against :data:`TIMING_RULES`, the four-activate window, the bank-state rules and the refresh
rule; each broken rule becomes a :class:`Violation` in ``model.violations`` (or an
AssertionError at once with ``strict=True``).  Pure Python and numpy, so the Amaranth-
simulator and the cocotb testbenches use it alike.
"""
from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from refree.hw.ddr4 import RankGeometry, SpeedGrade, Timing, speed_grade

__all__ = ["Rule", "TIMING_RULES", "Violation", "Ddr4Counters", "Ddr4RankModel", "COMMANDS",
           "SAME_BANK", "SAME_BANK_GROUP", "OTHER_BANK_GROUP", "ANY_BANK",
           "RULE_TFAW", "RULE_REFRESH_OVERDUE", "RULE_ACT_OPEN_BANK", "RULE_ACCESS_CLOSED_BANK",
           "RULE_REF_BANK_OPEN", "RULE_COMMAND_BUS"]

COMMANDS = ("ACT", "RD", "WR", "PRE", "PREA", "REF")

# Scopes of a rule: which earlier commands it measures from, relative to the new command's bank.
SAME_BANK = "same bank"
SAME_BANK_GROUP = "same bank group"     # any bank of the new command's bank group, itself too
OTHER_BANK_GROUP = "other bank group"   # any bank of the other bank groups
ANY_BANK = "any bank of the rank"
_SCOPES = (SAME_BANK, SAME_BANK_GROUP, OTHER_BANK_GROUP, ANY_BANK)

# Names of the rules that are not rows of the timing table.
RULE_TFAW = "tFAW (no 5th ACT in the window)"
RULE_REFRESH_OVERDUE = "refresh overdue (more than 9 x tREFI since the last REF)"
RULE_ACT_OPEN_BANK = "ACT to an open bank"
RULE_ACCESS_CLOSED_BANK = "RD/WR to a closed bank"
RULE_REF_BANK_OPEN = "REF with a bank open"
RULE_COMMAND_BUS = "two commands in one clock"


@dataclass(frozen=True)
class Rule:
    """One row of the timing table: ``cmd`` may not follow ``prev`` in ``scope`` sooner than
    ``param`` clocks (an attribute of :class:`~refree.hw.ddr4.Timing`)."""
    prev: str
    cmd: str
    scope: str
    param: str

    @property
    def name(self):
        return f"{self.prev}->{self.cmd} {self.param} ({self.scope})"


TIMING_RULES = (
    Rule("ACT", "ACT", SAME_BANK, "tRC"),
    Rule("ACT", "ACT", SAME_BANK_GROUP, "tRRD_L"),
    Rule("ACT", "ACT", OTHER_BANK_GROUP, "tRRD_S"),
    Rule("ACT", "RD", SAME_BANK, "tRCD"),
    Rule("ACT", "WR", SAME_BANK, "tRCD"),
    Rule("ACT", "PRE", SAME_BANK, "tRAS"),
    Rule("PRE", "ACT", SAME_BANK, "tRP"),
    Rule("PRE", "REF", ANY_BANK, "tRP"),
    Rule("RD", "RD", SAME_BANK_GROUP, "tCCD_L"),
    Rule("RD", "RD", OTHER_BANK_GROUP, "tCCD_S"),
    Rule("WR", "WR", SAME_BANK_GROUP, "tCCD_L"),
    Rule("WR", "WR", OTHER_BANK_GROUP, "tCCD_S"),
    Rule("RD", "WR", ANY_BANK, "rd_to_wr"),
    Rule("WR", "RD", SAME_BANK_GROUP, "wr_to_rd_l"),
    Rule("WR", "RD", OTHER_BANK_GROUP, "wr_to_rd_s"),
    Rule("RD", "PRE", SAME_BANK, "tRTP"),
    Rule("WR", "PRE", SAME_BANK, "wr_to_pre"),
    Rule("REF", "ACT", ANY_BANK, "tRFC"),
    Rule("REF", "PRE", ANY_BANK, "tRFC"),
    Rule("REF", "REF", ANY_BANK, "tRFC"),
)
"""The timing table.  PREA is checked as a PRE to every bank it closes (and against the
rank-wide rows when it closes none); RD/WR after REF need an ACT, which the REF->ACT row and
the state rules cover."""

_KINDS = ("ACT", "RD", "WR", "PRE", "REF")
# REF has no bank, so the rows that start or end at a REF must be rank-wide.
assert all(r.prev in _KINDS and r.cmd in _KINDS and r.scope in _SCOPES
           and (r.param in {f.name for f in fields(Timing)}
                or isinstance(getattr(Timing, r.param, None), property))
           and ("REF" not in (r.prev, r.cmd) or r.scope == ANY_BANK) for r in TIMING_RULES)
_RULES_BY_CMD = {k: tuple(r for r in TIMING_RULES if r.cmd == k) for k in _KINDS}


@dataclass(frozen=True)
class Violation:
    """One broken rule.

    Attributes
    ----------
    cycle:
        Clock cycle of the offending command.
    command:
        The command as text, e.g. ``"RD(bg=0, ba=1, col=8)"``.
    rule:
        The rule's name (:attr:`Rule.name` or one of the ``RULE_*`` names).
    required, actual:
        Spacing in clocks the rule asks for and the one seen (a minimum for the timing rules
        and tFAW, a maximum for the refresh rule); None for the state rules.
    detail:
        What the spacing is measured from, or what state the bank was in.
    """
    cycle: int
    command: str
    rule: str
    required: int | None = None
    actual: int | None = None
    detail: str = ""

    def __str__(self):
        text = f"cycle {self.cycle}: {self.command} breaks {self.rule}"
        if self.required is not None:
            bound = "at most" if self.rule == RULE_REFRESH_OVERDUE else "at least"
            text += f": needs {bound} {self.required} clocks, got {self.actual}"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass
class Ddr4Counters:
    """Command and access counts of one rank.

    Attributes
    ----------
    reads, writes:
        RD and WR commands executed (not those to a closed bank).
    activates, refreshes:
        ACT and REF commands.
    precharges:
        Banks closed by PRE or PREA (a PREA that closes three banks counts 3; a PRE to a
        bank already closed is a no-op and counts 0).
    row_hits:
        Accesses (RD or WR) whose bank's row was already open and had served an earlier
        access since its ACT.
    row_misses:
        First accesses after an ACT to a bank that was precharged: never opened, closed by
        PREA, refreshed since, or closed by a PRE of the very row now opened again.
    row_conflicts:
        First accesses after an ACT to a bank whose previous row, another one, was closed by
        a PRE to that bank (the old row had to be precharged to open this one).  These are
        the definitions of an open-row controller, which closes a single bank only on a
        conflict; under a closed-row policy most first accesses would count as conflicts.
    data_bus_busy_cycles:
        Clocks the data bus carries a burst: ``BL/2`` = 4 per RD or WR, so bandwidth
        utilisation is ``data_bus_busy_cycles / cycles``.

    ``row_hits + row_misses + row_conflicts == reads + writes``.
    """
    reads: int = 0
    writes: int = 0
    activates: int = 0
    precharges: int = 0
    refreshes: int = 0
    row_hits: int = 0
    row_misses: int = 0
    row_conflicts: int = 0
    data_bus_busy_cycles: int = 0

    def utilisation(self, cycles):
        """Fraction of ``cycles`` clocks the data bus was busy."""
        if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
            raise ValueError(f"cycles must be an integer >= 1, not {cycles!r}")
        return self.data_bus_busy_cycles / cycles


class _Bank:
    """State of one bank: its open row (None when precharged) and what the counters need."""
    __slots__ = ("row", "accessed", "first_access_kind", "row_closed_by_pre")

    def __init__(self):
        self.row = None
        self.accessed = False                # an access has been served since the ACT
        self.first_access_kind = "miss"      # how the first access after the ACT counts
        self.row_closed_by_pre = None        # row the last single-bank PRE closed, if no REF since


class Ddr4RankModel:
    """One DDR4 rank at transaction level: commands with their clock cycle in, data and
    violations out.

    Parameters
    ----------
    timing:
        A :class:`~refree.hw.ddr4.Timing`, a :class:`~refree.hw.ddr4.SpeedGrade` or a grade
        name such as ``"DDR4-2400"``.
    geometry:
        The rank's :class:`~refree.hw.ddr4.RankGeometry` (default: eight 8 Gb x8 devices).
    strict:
        Raise AssertionError at the first violation instead of only recording it.
    fill:
        Byte value that data never written reads as (default 0, as in
        :mod:`refree.verif.staging`), an integer in [0, 255].
    start_cycle:
        Cycle the rank starts at, all banks precharged; the refresh rule counts from it
        until the first REF.

    Attributes
    ----------
    violations:
        :class:`Violation` records, in the order found.
    counters:
        :class:`Ddr4Counters`.

    Notes
    -----
    Commands must come in non-decreasing cycle order (ValueError otherwise); two in one
    cycle break :data:`RULE_COMMAND_BUS`.  RD returns the burst at once with the cycle its
    first beat is on the data bus, ``cycle + CL``; WR takes the burst that is on the bus at
    ``cycle + CWL`` (AL = 0).  A command that breaks a rule is still executed where it can
    be: an ACT to an open bank opens the new row, a REF with a bank open refreshes; a RD to
    a closed bank returns the fill pattern and a WR to a closed bank is dropped (neither is
    counted).  The backing store is sparse: a dict of 64-byte bursts keyed by
    ``(bg, ba, row, burst)``.
    """

    def __init__(self, timing="DDR4-2400", geometry=RankGeometry(), *, strict=False, fill=0,
                 start_cycle=0):
        if isinstance(timing, str):
            timing = speed_grade(timing)
        if isinstance(timing, SpeedGrade):
            timing = timing.timing()
        if not isinstance(timing, Timing):
            raise ValueError(f"timing must be a Timing, a SpeedGrade or a grade name, not {timing!r}")
        if not isinstance(geometry, RankGeometry):
            raise ValueError(f"geometry must be a RankGeometry, not {geometry!r}")
        if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ValueError(f"fill must be an integer in [0, 255], not {fill!r}")
        _check_int("start_cycle", start_cycle, 0, None)
        self.timing = timing
        self.geometry = geometry
        self.strict = bool(strict)
        self.fill = fill
        self.violations = []
        self.counters = Ddr4Counters()
        self._store = {}
        self._banks = {(g, b): _Bank() for g in range(geometry.bank_groups)
                       for b in range(geometry.banks_per_group)}
        # Last cycle of each command kind per bank, per bank group and in the rank.
        self._last_bank = {k: {} for k in _KINDS}
        self._last_group = {k: {} for k in _KINDS}
        self._last_rank = {k: None for k in _KINDS}
        self._recent_acts = deque(maxlen=4)
        self._last_ref = start_cycle
        self._last_cycle = None

    # -- commands ------------------------------------------------------------------------

    def act(self, cycle, bg, ba, row):
        """ACT: open ``row`` in bank ``(bg, ba)``."""
        text = f"ACT(bg={bg}, ba={ba}, row={row})"
        self._begin(cycle, text)
        self._check_bank(bg, ba)
        _check_int("row", row, 0, self.geometry.rows - 1)
        self._check_rules(cycle, text, "ACT", [(bg, ba)])
        acts = self._recent_acts
        if len(acts) == acts.maxlen and cycle - acts[0] < self.timing.tFAW:
            self._violate(cycle, text, RULE_TFAW, self.timing.tFAW, cycle - acts[0],
                          f"4th ACT back at cycle {acts[0]}")
        acts.append(cycle)
        bank = self._banks[bg, ba]
        if bank.row is not None:
            self._violate(cycle, text, RULE_ACT_OPEN_BANK, detail=f"row {bank.row} is open")
        conflict = bank.row_closed_by_pre is not None and bank.row_closed_by_pre != row
        bank.first_access_kind = "conflict" if conflict else "miss"
        bank.row, bank.accessed = row, False
        self._record(cycle, "ACT", bg, ba)
        self.counters.activates += 1

    def rd(self, cycle, bg, ba, col):
        """RD (no auto-precharge) of the burst at column ``col`` of the open row.

        Returns
        -------
        (numpy.ndarray, int)
            The burst (``uint8``, ``burst_bytes`` long, a copy) and the cycle its first beat
            is on the data bus, ``cycle + CL``.
        """
        text = f"RD(bg={bg}, ba={ba}, col={col})"
        row = self._access(cycle, text, "RD", bg, ba, col)
        if row is None:
            data = np.full(self.geometry.burst_bytes, self.fill, np.uint8)
        else:
            data = self._burst(bg, ba, row, col).copy()
            self.counters.reads += 1
        return data, cycle + self.timing.CL

    def wr(self, cycle, bg, ba, col, data):
        """WR (no auto-precharge) of one burst at column ``col`` of the open row; ``data``
        (``burst_bytes`` bytes, as bytes or a ``uint8`` array) is the burst on the data bus
        from cycle ``cycle + CWL``, which is returned."""
        text = f"WR(bg={bg}, ba={ba}, col={col})"
        burst = self._as_bursts(data, 1)
        row = self._access(cycle, text, "WR", bg, ba, col)
        if row is not None:
            self._store[bg, ba, row, col // 8] = burst[0]
            self.counters.writes += 1
        return cycle + self.timing.CWL

    def pre(self, cycle, bg, ba):
        """PRE of bank ``(bg, ba)``.  To a bank already precharged it is a no-op (JEDEC): it
        starts no tRP, but as a command on the bus it still obeys the timing rules."""
        text = f"PRE(bg={bg}, ba={ba})"
        self._begin(cycle, text)
        self._check_bank(bg, ba)
        self._check_rules(cycle, text, "PRE", [(bg, ba)])
        bank = self._banks[bg, ba]
        if bank.row is not None:
            bank.row_closed_by_pre = bank.row
            self._close(cycle, bg, ba)

    def prea(self, cycle):
        """PREA: precharge every open bank (checked as a PRE to each of them)."""
        text = "PREA"
        self._begin(cycle, text)
        open_banks = [key for key, bank in self._banks.items() if bank.row is not None]
        self._check_rules(cycle, text, "PRE", open_banks)
        for bg, ba in open_banks:
            # Closed by the all-bank precharge (refresh, hand-over), not for another row.
            self._banks[bg, ba].row_closed_by_pre = None
            self._close(cycle, bg, ba)

    def ref(self, cycle):
        """REF (all banks, 1x mode); every bank must be precharged."""
        text = "REF"
        self._begin(cycle, text)
        self._check_rules(cycle, text, "REF", [])
        open_banks = [key for key, bank in self._banks.items() if bank.row is not None]
        if open_banks:
            self._violate(cycle, text, RULE_REF_BANK_OPEN,
                          detail="open: " + ", ".join(f"bg={g} ba={b}" for g, b in open_banks))
        self._check_refresh_interval(cycle, text)
        for bank in self._banks.values():
            bank.row_closed_by_pre = None
        self._last_ref = cycle
        self._record(cycle, "REF", None, None)
        self.counters.refreshes += 1

    def issue(self, cycle, command, *args):
        """Any command by name (``"ACT"``, ``"RD"``, ``"WR"``, ``"PRE"``, ``"PREA"``,
        ``"REF"``) with the arguments of its method, for monitors that decode the bus."""
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {', '.join(COMMANDS)}, not {command!r}")
        return getattr(self, command.lower())(cycle, *args)

    def earliest(self, command, bg=None, ba=None):
        """The first cycle at which ``command`` (to bank ``(bg, ba)`` for ACT, RD, WR and PRE)
        meets every timing rule and tFAW, given the commands so far; the bank-state rules are
        the caller's.  A controller model (the host driver) schedules with it."""
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {', '.join(COMMANDS)}, not {command!r}")
        kind = "PRE" if command == "PREA" else command
        banks = [k for k, b in self._banks.items() if b.row is not None] if command == "PREA" else [(bg, ba)]
        at = 0 if self._last_cycle is None else self._last_cycle + 1
        for rule in _RULES_BY_CMD[kind]:
            for b in ([(None, None)] if rule.scope == ANY_BANK else banks):
                last = self._last(rule, *b)
                if last is not None:
                    at = max(at, last + getattr(self.timing, rule.param))
        if kind == "ACT" and len(self._recent_acts) == self._recent_acts.maxlen:
            at = max(at, self._recent_acts[0] + self.timing.tFAW)
        return at

    def finish(self, cycle):
        """End of the run at ``cycle``: the refresh rule is checked once more (the last REF,
        or the start, may not be more than 9 x tREFI back).  Returns ``violations``."""
        _check_int("cycle", cycle, 0, None)
        if self._last_cycle is not None and cycle < self._last_cycle:
            raise ValueError(f"cycle must be >= the last command's cycle {self._last_cycle}, "
                             f"not {cycle}")
        self._check_refresh_interval(cycle, "end of run")
        return self.violations

    # -- backdoor --------------------------------------------------------------------------

    def load(self, bg, ba, row, col, data):
        """Backdoor write, no timing: ``data`` (a whole number of bursts, bytes or ``uint8``)
        into consecutive bursts of one row from column ``col``."""
        self._check_location(bg, ba, row, col)
        raw = _as_array(data)
        nbursts, partial = divmod(raw.size, self.geometry.burst_bytes)
        first = col // 8
        if nbursts < 1 or partial or first + nbursts > self.geometry.bursts_per_row:
            raise ValueError(f"data must be 1 to {self.geometry.bursts_per_row - first} whole "
                             f"bursts of {self.geometry.burst_bytes} bytes (to the end of the row), "
                             f"not {raw.size} bytes")
        for k, burst in enumerate(self._as_bursts(raw, nbursts)):
            self._store[bg, ba, row, first + k] = burst

    def peek(self, bg, ba, row, col, bursts=1):
        """Backdoor read, no timing: ``bursts`` consecutive bursts of one row from column
        ``col``, as one ``uint8`` array (a copy)."""
        self._check_location(bg, ba, row, col)
        first = col // 8
        _check_int("bursts", bursts, 1, self.geometry.bursts_per_row - first)
        return np.concatenate([self._burst(bg, ba, row, 8 * k)
                               for k in range(first, first + bursts)])

    def stored(self):
        """Every burst ever written or loaded: ``((bg, ba, row, col), uint8 array)`` pairs
        (backdoor, for reading a whole memory image back)."""
        return [((bg, ba, row, 8 * burst), data.copy())
                for (bg, ba, row, burst), data in sorted(self._store.items())]

    def open_row(self, bg, ba):
        """The row open in bank ``(bg, ba)``, or None when it is precharged."""
        self._check_bank(bg, ba)
        return self._banks[bg, ba].row

    # -- internals -------------------------------------------------------------------------

    def _begin(self, cycle, text):
        _check_int("cycle", cycle, 0, None)
        if self._last_cycle is not None:
            if cycle < self._last_cycle:
                raise ValueError(f"cycle must be >= the previous command's cycle "
                                 f"{self._last_cycle}, not {cycle}")
            if cycle == self._last_cycle:
                self._violate(cycle, text, RULE_COMMAND_BUS,
                              detail="one command per clock on a rank's command bus")
        self._last_cycle = cycle

    def _check_bank(self, bg, ba):
        _check_int("bg", bg, 0, self.geometry.bank_groups - 1)
        _check_int("ba", ba, 0, self.geometry.banks_per_group - 1)

    def _check_column(self, col):
        _check_int("col", col, 0, self.geometry.columns - 8)
        if col % 8:
            raise ValueError(f"col must be a multiple of 8 (the start of a BL8 burst), not {col}")

    def _check_location(self, bg, ba, row, col):
        self._check_bank(bg, ba)
        _check_int("row", row, 0, self.geometry.rows - 1)
        self._check_column(col)

    def _access(self, cycle, text, kind, bg, ba, col):
        """Checks of RD and WR; the row accessed, or None when the bank is closed."""
        self._begin(cycle, text)
        self._check_bank(bg, ba)
        self._check_column(col)
        self._check_rules(cycle, text, kind, [(bg, ba)])
        bank = self._banks[bg, ba]
        if bank.row is None:
            self._violate(cycle, text, RULE_ACCESS_CLOSED_BANK, detail="no ACT since its PRE")
            return None
        if bank.accessed:
            self.counters.row_hits += 1
        elif bank.first_access_kind == "conflict":
            self.counters.row_conflicts += 1
        else:
            self.counters.row_misses += 1
        bank.accessed = True
        self.counters.data_bus_busy_cycles += self.timing.burst_clocks
        self._record(cycle, kind, bg, ba)
        return bank.row

    def _close(self, cycle, bg, ba):
        self._banks[bg, ba].row = None
        self._record(cycle, "PRE", bg, ba)
        self.counters.precharges += 1

    def _record(self, cycle, kind, bg, ba):
        if bg is not None:
            self._last_bank[kind][bg, ba] = cycle
            self._last_group[kind][bg] = cycle
        self._last_rank[kind] = cycle

    def _last(self, rule, bg, ba):
        """Cycle of the latest ``rule.prev`` command in the rule's scope, or None."""
        if rule.scope == ANY_BANK:
            return self._last_rank[rule.prev]
        if rule.scope == SAME_BANK:
            return self._last_bank[rule.prev].get((bg, ba))
        groups = self._last_group[rule.prev]
        if rule.scope == SAME_BANK_GROUP:
            return groups.get(bg)
        return max((c for g, c in groups.items() if g != bg), default=None)

    def _check_rules(self, cycle, text, kind, banks):
        """Every timing rule ending at ``kind``: the rank-wide ones once, the others for each
        bank of ``banks`` (the command's bank, or the banks a PREA closes)."""
        for rule in _RULES_BY_CMD[kind]:
            targets = [(None, None)] if rule.scope == ANY_BANK else banks
            for bg, ba in targets:
                last = self._last(rule, bg, ba)
                required = getattr(self.timing, rule.param)
                if last is not None and cycle - last < required:
                    where = f" on bg={bg} ba={ba}" if text == "PREA" and bg is not None else ""
                    self._violate(cycle, text, rule.name, required, cycle - last,
                                  f"after {rule.prev} at cycle {last}{where}")

    def _check_refresh_interval(self, cycle, text):
        since = cycle - self._last_ref
        if since > self.timing.max_refresh_interval:
            self._violate(cycle, text, RULE_REFRESH_OVERDUE, self.timing.max_refresh_interval,
                          since, f"last REF (or start) at cycle {self._last_ref}, "
                                 f"tREFI = {self.timing.tREFI}")

    def _violate(self, cycle, text, rule, required=None, actual=None, detail=""):
        violation = Violation(cycle, text, rule, required, actual, detail)
        self.violations.append(violation)
        if self.strict:
            raise AssertionError(str(violation))

    def _burst(self, bg, ba, row, col):
        burst = self._store.get((bg, ba, row, col // 8))
        return np.full(self.geometry.burst_bytes, self.fill, np.uint8) if burst is None else burst

    def _as_bursts(self, data, nbursts):
        """``data`` as ``nbursts`` rows of ``burst_bytes`` uint8 (copies)."""
        data = _as_array(data)
        size = nbursts * self.geometry.burst_bytes
        if data.dtype != np.uint8 or data.ndim != 1 or data.size != size:
            raise ValueError(f"data must be {size} bytes (bytes or a 1-d uint8 array), not "
                             f"{data.size} of {data.dtype} in {data.ndim} dimension(s)")
        return data.reshape(nbursts, self.geometry.burst_bytes).copy()


def _as_array(data):
    """Bytes-like data as a uint8 array; anything else as numpy makes it (checked by the caller)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), np.uint8)
    return np.asarray(data)


def _check_int(name, value, lo, hi):
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or value < lo or (hi is not None and value > hi)):
        allowed = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {'in ' if hi is not None else ''}{allowed}, "
                         f"not {value!r}")
