"""DDR4 timing tables per speed grade, in nanoseconds and clocks, and their clock counts.

The figures are those of JEDEC JESD79-4 (DDR4 SDRAM standard): the speed-bin tables
(CL-nRCD-nRP, tAA, tRCD, tRP, tRAS, tRC, CWL) and the "timing parameters by speed grade"
tables, for an 8 Gb x8 device (1 KB page, 4 bank groups of 4 banks, tRFC1 = 350 ns) at
normal temperature (0-85 degC, tREFI = 7.8 us) with 1 tCK read and write preambles and no
additive latency.  A parameter that JEDEC gives as ``max(n nCK, t ns)`` is a
:class:`MinTime`; it becomes ``max(n, ceil(t / tCK))`` clocks, computed exactly with
rational numbers so that a figure that is a whole number of clocks (5 ns at 0.8333 ns is 6)
never rounds up by float error.

===========  ===========  ========  ===========  ===
Grade        Speed bin    tCK (ns)  CL-nRCD-nRP  CWL
===========  ===========  ========  ===========  ===
DDR4-2400    DDR4-2400R   0.8333    16-16-16     12
DDR4-2666    DDR4-2666V   0.750     19-19-19     14
DDR4-2933    DDR4-2933Y   0.682     21-21-21     16
DDR4-3200    DDR4-3200AA  0.625     22-22-22     16
===========  ===========  ========  ===========  ===
"""
import math
from dataclasses import dataclass, fields
from fractions import Fraction

__all__ = ["MinTime", "SpeedGrade", "Timing", "SPEED_GRADES", "speed_grade", "BURST_LENGTH",
           "MAX_POSTPONED_REFRESHES"]

BURST_LENGTH = 8
"""DDR4 bursts are BL8: 8 data beats, 4 clocks of the double-data-rate bus."""

MAX_POSTPONED_REFRESHES = 8
"""JEDEC lets a controller postpone at most 8 REF commands, so two REFs are never more than
``(MAX_POSTPONED_REFRESHES + 1) * tREFI`` apart."""


def _exact(value):
    """A table figure as an exact rational: the decimal that ``repr`` shows (13.32 is 333/25,
    not the binary float 13.3200000000000002842...)."""
    return value if isinstance(value, Fraction) else Fraction(repr(value))


@dataclass(frozen=True)
class MinTime:
    """A JEDEC minimum ``max(nck clocks, ns nanoseconds)``; a part that JEDEC does not give is 0.

    Parameters
    ----------
    nck:
        Minimum in clocks (``nCK``), 0 when the parameter is given in nanoseconds only.
    ns:
        Minimum in nanoseconds, 0 when the parameter is given in clocks only.
    """
    nck: int = 0
    ns: float = 0.0

    def __post_init__(self):
        if isinstance(self.nck, bool) or not isinstance(self.nck, int) or not 0 <= self.nck <= 1 << 20:
            raise ValueError(f"MinTime.nck must be an integer in [0, {1 << 20}], not {self.nck!r}")
        if (isinstance(self.ns, bool) or not isinstance(self.ns, (int, float, Fraction))
                or not math.isfinite(self.ns) or not 0 <= self.ns <= 1e6):
            raise ValueError(f"MinTime.ns must be a number in [0, 1e6], not {self.ns!r}")
        if self.nck == 0 and self.ns == 0:
            raise ValueError("MinTime needs nck or ns (or both) above 0")

    def clocks(self, tck_ps):
        """Clocks of period ``tck_ps`` picoseconds: ``max(nck, ceil(ns / tCK))``, exactly."""
        return max(self.nck, math.ceil(_exact(self.ns) * 1000 / Fraction(tck_ps)))


@dataclass(frozen=True)
class SpeedGrade:
    """The timing table of one DDR4 speed grade, as JEDEC gives it (nanoseconds and clocks).

    The defaults are the figures that JESD79-4 gives alike for every grade from DDR4-2400 to
    DDR4-3200 of an 8 Gb x8 device; the per-grade figures are in :data:`SPEED_GRADES`.

    Parameters
    ----------
    name:
        The grade's name, e.g. ``"DDR4-2400"``.
    speed_bin:
        The JEDEC speed bin the table is taken from, e.g. ``"DDR4-2400R"`` (CL-nRCD-nRP
        16-16-16).
    tck_ps:
        Clock period in picoseconds (a :class:`~fractions.Fraction` where it is not whole).
        JEDEC lists tCK(avg)min rounded to the picosecond.  We take the period that makes the
        bin's own figures come out: exactly 2500/3 ps (1200 MHz) for DDR4-2400, since
        833 ps would turn tCCD_L = 5 ns into 7 clocks instead of 6; JEDEC's 682 ps for
        DDR4-2933, since the exact 1466 2/3 MHz period (681.8 ps) would turn the bin's own
        tRCD = 14.32 ns into 22 clocks instead of 21.
    CL:
        CAS latency: the bin's CL in clocks and tAA in nanoseconds.
    CWL:
        CAS write latency in clocks (the first CWL set of the grade, for a 1 tCK write
        preamble).
    tRCD, tRP, tRAS, tRC:
        ACT to RD/WR, PRE to ACT, ACT to PRE, ACT to ACT of one bank.
    tCCD_S, tCCD_L:
        RD to RD (or WR to WR) in another bank group / the same bank group.
    tRRD_S, tRRD_L:
        ACT to ACT in another bank group / the same bank group (1 KB page).
    tFAW:
        Window in which at most four ACTs may be issued (1 KB page).
    tWR:
        Write recovery: end of the write burst to PRE.
    tWTR_S, tWTR_L:
        End of the write burst to RD in another bank group / the same bank group.
    tRTP:
        RD to PRE.
    tRFC:
        REF to any command (tRFC1 of an 8 Gb device, 1x refresh mode).
    tREFI_ns:
        Average refresh interval in nanoseconds (a maximum: converted rounding down).
    """
    name: str
    speed_bin: str
    tck_ps: Fraction
    CL: MinTime
    CWL: int
    tRCD: MinTime
    tRP: MinTime
    tRC: MinTime
    tRRD_S: MinTime
    tRAS: MinTime = MinTime(0, 32.0)
    tCCD_S: MinTime = MinTime(4)
    tCCD_L: MinTime = MinTime(5, 5.0)
    tRRD_L: MinTime = MinTime(4, 4.9)
    tFAW: MinTime = MinTime(20, 21.0)
    tWR: MinTime = MinTime(0, 15.0)
    tWTR_S: MinTime = MinTime(2, 2.5)
    tWTR_L: MinTime = MinTime(4, 7.5)
    tRTP: MinTime = MinTime(4, 7.5)
    tRFC: MinTime = MinTime(0, 350.0)
    tREFI_ns: float = 7800.0

    def __post_init__(self):
        if not isinstance(self.tck_ps, (int, Fraction)) or not 100 <= self.tck_ps <= 2000:
            raise ValueError(f"SpeedGrade.tck_ps must be an integer or Fraction in [100, 2000], "
                             f"not {self.tck_ps!r}")
        if isinstance(self.CWL, bool) or not isinstance(self.CWL, int) or not 1 <= self.CWL <= 64:
            raise ValueError(f"SpeedGrade.CWL must be an integer in [1, 64], not {self.CWL!r}")
        for f in fields(self):
            if f.type is MinTime and not isinstance(getattr(self, f.name), MinTime):
                raise ValueError(f"SpeedGrade.{f.name} must be a MinTime, not {getattr(self, f.name)!r}")
        if not isinstance(self.tREFI_ns, (int, float)) or not 1000 <= self.tREFI_ns <= 100_000:
            raise ValueError(f"SpeedGrade.tREFI_ns must be a number in [1000, 100000], "
                             f"not {self.tREFI_ns!r}")

    @property
    def tCK_ns(self):
        """Clock period in nanoseconds (for display)."""
        return float(self.tck_ps) / 1000

    def timing(self):
        """The table converted to clock counts (:class:`Timing`)."""
        clocks = {f.name: getattr(self, f.name).clocks(self.tck_ps)
                  for f in fields(self) if f.type is MinTime}
        # tREFI is a maximum (the average interval the controller must keep), so it rounds
        # down: a controller that refreshes every tREFI clocks is never late.
        trefi = math.floor(_exact(self.tREFI_ns) * 1000 / Fraction(self.tck_ps))
        return Timing(name=self.name, CWL=self.CWL, BL=BURST_LENGTH, tREFI=trefi, **clocks)


@dataclass(frozen=True)
class Timing:
    """Integer clock counts of one speed grade, the form the command engine and the device
    model use.  Build it with :meth:`SpeedGrade.timing`.

    Every field is a minimum spacing in clocks between the commands named in
    :class:`SpeedGrade`, except ``CL``/``CWL`` (latencies from a RD/WR command to its data on
    the bus), ``BL`` (beats of a burst) and ``tREFI`` (the average refresh interval, a
    maximum).  The derived turnarounds are properties (AL = 0, 1 tCK preambles).
    """
    name: str
    CL: int
    CWL: int
    BL: int
    tRCD: int
    tRP: int
    tRAS: int
    tRC: int
    tCCD_S: int
    tCCD_L: int
    tRRD_S: int
    tRRD_L: int
    tFAW: int
    tWR: int
    tWTR_S: int
    tWTR_L: int
    tRTP: int
    tREFI: int
    tRFC: int

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
                raise ValueError(f"Timing.{f.name} must be an integer in [1, {1 << 20}], not {v!r}")
        if self.BL != BURST_LENGTH:
            raise ValueError(f"Timing.BL must be {BURST_LENGTH} (DDR4 BL8), not {self.BL!r}")

    @property
    def burst_clocks(self):
        """Clocks a BL8 burst holds the data bus (two beats per clock)."""
        return self.BL // 2

    @property
    def rd_to_wr(self):
        """RD to WR, any bank of the rank: ``CL - CWL + BL/2 + 2`` (read data off the bus, the
        bus turned around, then the write preamble)."""
        return self.CL - self.CWL + self.burst_clocks + 2

    @property
    def wr_to_rd_l(self):
        """WR to RD in the same bank group: ``CWL + BL/2 + tWTR_L`` (tWTR counts from the end
        of the write data)."""
        return self.CWL + self.burst_clocks + self.tWTR_L

    @property
    def wr_to_rd_s(self):
        """WR to RD in another bank group: ``CWL + BL/2 + tWTR_S``."""
        return self.CWL + self.burst_clocks + self.tWTR_S

    @property
    def wr_to_pre(self):
        """WR to PRE of the same bank: ``CWL + BL/2 + tWR`` (tWR counts from the end of the
        write data)."""
        return self.CWL + self.burst_clocks + self.tWR

    @property
    def max_refresh_interval(self):
        """Longest legal spacing of two REFs: ``(MAX_POSTPONED_REFRESHES + 1) * tREFI``."""
        return (MAX_POSTPONED_REFRESHES + 1) * self.tREFI


def _grade(rate, letter, tck_ps, cl, t_aa, cwl, t_rc, t_rrd_s):
    """One row of the table: the figures that differ between grades.  In each bin used here
    tRCD = tRP = tAA and CL = nRCD = nRP."""
    return SpeedGrade(name=f"DDR4-{rate}", speed_bin=f"DDR4-{rate}{letter}", tck_ps=tck_ps,
                      CL=MinTime(cl, t_aa), CWL=cwl, tRCD=MinTime(cl, t_aa), tRP=MinTime(cl, t_aa),
                      tRC=MinTime(0, t_rc), tRRD_S=MinTime(4, t_rrd_s))


SPEED_GRADES = {g.name: g for g in (
    #      rate  bin   tCK (ps)             CL  tAA    CWL  tRC    tRRD_S (ns, 1 KB page)
    _grade(2400, "R",  Fraction(2500, 3),   16, 13.32, 12,  45.32, 3.3),
    _grade(2666, "V",  750,                 19, 14.25, 14,  46.25, 3.0),
    _grade(2933, "Y",  682,                 21, 14.32, 16,  46.32, 2.7),
    _grade(3200, "AA", 625,                 22, 13.75, 16,  45.75, 2.5),
)}
"""The speed grades by name (``"DDR4-2400"`` ...), each from one JEDEC speed bin."""


def speed_grade(name):
    """The :class:`SpeedGrade` called ``name``; ValueError naming the known grades otherwise."""
    try:
        return SPEED_GRADES[name]
    except (KeyError, TypeError):
        raise ValueError(f"speed grade must be one of {', '.join(SPEED_GRADES)}, not {name!r}") from None
