"""DDR4 timing tables: the clock counts of each speed grade against figures worked out by
hand, the exact ns -> clock conversion, the lookup and the geometry."""
import re
from dataclasses import asdict, replace
from fractions import Fraction

import pytest

from refree.hw.ddr4 import (MAX_POSTPONED_REFRESHES, SPEED_GRADES, MinTime, RankGeometry, Timing,
                            speed_grade)

# Hand conversions: clocks = max(nCK, ceil(ns / tCK)); tREFI = floor(7800 ns / tCK).
#
# DDR4-2400R, tCK = 5/6 ns (1200 MHz), so ns / tCK = 1.2 * ns:
#   CL/tRCD/tRP  max(16, ceil(13.32 * 1.2 = 15.984)) = 16
#   tRAS  32 * 1.2 = 38.4 -> 39          tRC   45.32 * 1.2 = 54.384 -> 55
#   tCCD_S 4 nCK                         tCCD_L max(5, 5 * 1.2 = 6.0 -> 6) = 6
#   tRRD_S max(4, 3.3 * 1.2 = 3.96 -> 4) = 4    tRRD_L max(4, 4.9 * 1.2 = 5.88 -> 6) = 6
#   tFAW  max(20, 21 * 1.2 = 25.2 -> 26) = 26   tWR   15 * 1.2 = 18.0 -> 18
#   tWTR_S max(2, 2.5 * 1.2 = 3.0 -> 3) = 3     tWTR_L max(4, 7.5 * 1.2 = 9.0 -> 9) = 9
#   tRTP  max(4, 9) = 9                  tRFC  350 * 1.2 = 420.0 -> 420
#   tREFI 7800 * 1.2 = 9360.0 -> 9360
# DDR4-3200AA, tCK = 0.625 ns, so ns / tCK = 1.6 * ns:
#   CL/tRCD/tRP  max(22, 13.75 * 1.6 = 22.0 -> 22) = 22
#   tRAS  32 * 1.6 = 51.2 -> 52          tRC   45.75 * 1.6 = 73.2 -> 74
#   tCCD_S 4                             tCCD_L max(5, 5 * 1.6 = 8.0 -> 8) = 8
#   tRRD_S max(4, 2.5 * 1.6 = 4.0 -> 4) = 4     tRRD_L max(4, 4.9 * 1.6 = 7.84 -> 8) = 8
#   tFAW  max(20, 21 * 1.6 = 33.6 -> 34) = 34   tWR   15 * 1.6 = 24.0 -> 24
#   tWTR_S max(2, 2.5 * 1.6 = 4.0 -> 4) = 4     tWTR_L max(4, 7.5 * 1.6 = 12.0 -> 12) = 12
#   tRTP  12                             tRFC  350 * 1.6 = 560.0 -> 560
#   tREFI 7800 * 1.6 = 12480
# DDR4-2666V, tCK = 0.75 ns (ns / tCK = ns * 4/3):
#   CL 19 (14.25 * 4/3 = 19.0); tRAS 42.67 -> 43; tRC 46.25 * 4/3 = 61.67 -> 62;
#   tCCD_L 6.67 -> 7; tRRD_S 3.0 * 4/3 = 4.0 -> 4; tRRD_L 6.53 -> 7; tFAW 28.0 -> 28;
#   tWR 20; tWTR_S 3.33 -> 4; tWTR_L 10; tRTP 10; tRFC 466.67 -> 467; tREFI 10400
# DDR4-2933Y, tCK = 0.682 ns:
#   CL 14.32 / 0.682 = 20.997 -> 21; tRAS 46.92 -> 47; tRC 46.32 / 0.682 = 67.92 -> 68;
#   tCCD_L 7.33 -> 8; tRRD_S 2.7 / 0.682 = 3.96 -> 4; tRRD_L 7.18 -> 8; tFAW 30.79 -> 31;
#   tWR 21.99 -> 22; tWTR_S 3.67 -> 4; tWTR_L 10.997 -> 11; tRTP 11; tRFC 513.2 -> 514;
#   tREFI 7800 / 0.682 = 11436.95 -> 11436
HAND = {
    "DDR4-2400": dict(CL=16, CWL=12, tRCD=16, tRP=16, tRAS=39, tRC=55, tCCD_S=4, tCCD_L=6,
                      tRRD_S=4, tRRD_L=6, tFAW=26, tWR=18, tWTR_S=3, tWTR_L=9, tRTP=9,
                      tREFI=9360, tRFC=420),
    "DDR4-2666": dict(CL=19, CWL=14, tRCD=19, tRP=19, tRAS=43, tRC=62, tCCD_S=4, tCCD_L=7,
                      tRRD_S=4, tRRD_L=7, tFAW=28, tWR=20, tWTR_S=4, tWTR_L=10, tRTP=10,
                      tREFI=10400, tRFC=467),
    "DDR4-2933": dict(CL=21, CWL=16, tRCD=21, tRP=21, tRAS=47, tRC=68, tCCD_S=4, tCCD_L=8,
                      tRRD_S=4, tRRD_L=8, tFAW=31, tWR=22, tWTR_S=4, tWTR_L=11, tRTP=11,
                      tREFI=11436, tRFC=514),
    "DDR4-3200": dict(CL=22, CWL=16, tRCD=22, tRP=22, tRAS=52, tRC=74, tCCD_S=4, tCCD_L=8,
                      tRRD_S=4, tRRD_L=8, tFAW=34, tWR=24, tWTR_S=4, tWTR_L=12, tRTP=12,
                      tREFI=12480, tRFC=560),
}

# Turnarounds (BL/2 = 4):
#   2400: RD->WR 16 - 12 + 4 + 2 = 10; WR->RD same BG 12 + 4 + 9 = 25, other BG 12 + 4 + 3 = 19;
#         WR->PRE 12 + 4 + 18 = 34; 9 x tREFI = 84240
#   3200: RD->WR 22 - 16 + 4 + 2 = 12; WR->RD 16 + 4 + 12 = 32 / 16 + 4 + 4 = 24;
#         WR->PRE 16 + 4 + 24 = 44; 9 x tREFI = 112320
DERIVED = {
    "DDR4-2400": dict(burst_clocks=4, rd_to_wr=10, wr_to_rd_l=25, wr_to_rd_s=19, wr_to_pre=34,
                      max_refresh_interval=84240),
    "DDR4-3200": dict(burst_clocks=4, rd_to_wr=12, wr_to_rd_l=32, wr_to_rd_s=24, wr_to_pre=44,
                      max_refresh_interval=112320),
}


def test_every_grade_is_checked_by_hand():
    assert set(SPEED_GRADES) == set(HAND)


@pytest.mark.parametrize("name", sorted(HAND))
def test_clock_counts_match_hand_conversion(name):
    timing = speed_grade(name).timing()
    assert asdict(timing) == dict(HAND[name], name=name, BL=8)


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_turnarounds_match_hand_figures(name):
    timing = speed_grade(name).timing()
    assert {k: getattr(timing, k) for k in DERIVED[name]} == DERIVED[name]


@pytest.mark.parametrize("name, speed_bin, cl_rcd_rp", [
    ("DDR4-2400", "DDR4-2400R", (16, 16, 16)), ("DDR4-2666", "DDR4-2666V", (19, 19, 19)),
    ("DDR4-2933", "DDR4-2933Y", (21, 21, 21)), ("DDR4-3200", "DDR4-3200AA", (22, 22, 22))])
def test_each_grade_meets_its_speed_bin(name, speed_bin, cl_rcd_rp):
    grade = speed_grade(name)
    timing = grade.timing()
    assert grade.speed_bin == speed_bin
    # The bin's name promises CL-nRCD-nRP: the ns figures must not round above it.
    assert (timing.CL, timing.tRCD, timing.tRP) == cl_rcd_rp
    # tRC = tRAS + tRP in ns, so in clocks it never exceeds the sum of the two.
    assert timing.tRC <= timing.tRAS + timing.tRP


def test_conversion_is_exact_where_float_division_is_not():
    tck_2400 = Fraction(2500, 3)
    assert MinTime(0, 5.0).clocks(tck_2400) == 6          # exactly 6.0 clocks: no round-up
    assert MinTime(0, 5.001).clocks(tck_2400) == 7        # a picosecond more needs a clock
    assert MinTime(0, 13.75).clocks(625) == 22
    assert MinTime(0, 13.751).clocks(625) == 23
    # Float error: 47 x 0.682 ns = 32.054 ns exactly, but 32.054 * 1000 / 682 in binary
    # floating point is 47.00000000000001, which a float ceil would make 48.
    assert 32.054 * 1000 / 682 > 47
    assert MinTime(0, 32.054).clocks(682) == 47
    assert MinTime(0, 4.2).clocks(600) == 7               # 4.2 / 0.6 is 7.000000000000001 too


def test_clock_minimum_wins_when_larger():
    assert MinTime(4, 2.5).clocks(625) == 4               # 2.5 / 0.625 = 4: equal
    assert MinTime(5, 1.0).clocks(625) == 5               # ns part only 2 clocks
    assert MinTime(4, 3.3).clocks(Fraction(2500, 3)) == 4
    assert MinTime(2).clocks(10_000) == 2


def test_refresh_interval_rounds_down():
    grade = replace(speed_grade("DDR4-3200"), tREFI_ns=7800.6)   # 12480.96 clocks
    assert grade.timing().tREFI == 12480
    assert grade.timing().max_refresh_interval == 9 * 12480


def test_postponed_refresh_limit():
    assert MAX_POSTPONED_REFRESHES == 8
    timing = speed_grade("DDR4-2400").timing()
    assert timing.max_refresh_interval == 9 * timing.tREFI


def test_unknown_grade_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        speed_grade("DDR4-2133")
    for name in ("DDR4-2400", "DDR4-2666", "DDR4-2933", "DDR4-3200"):
        assert name in str(err.value)
    assert "'DDR4-2133'" in str(err.value)
    with pytest.raises(ValueError, match="speed grade must be one of"):
        speed_grade(None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(nck=-1), "MinTime.nck must be an integer in [0, 1048576], not -1"),
    (dict(nck=2.0), "MinTime.nck must be an integer in [0, 1048576], not 2.0"),
    (dict(ns=-0.5), "MinTime.ns must be a number in [0, 1e6], not -0.5"),
    (dict(ns=float("nan")), "MinTime.ns must be a number in [0, 1e6], not nan"),
    (dict(), "MinTime needs nck or ns (or both) above 0"),
])
def test_min_time_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MinTime(**kwargs)


def test_speed_grade_and_timing_reject_bad_values():
    grade = speed_grade("DDR4-2400")
    with pytest.raises(ValueError, match=re.escape("SpeedGrade.tck_ps must be an integer or Fraction in [100, 2000]")):
        replace(grade, tck_ps=0.833)
    with pytest.raises(ValueError, match=re.escape("SpeedGrade.CWL must be an integer in [1, 64], not 0")):
        replace(grade, CWL=0)
    with pytest.raises(ValueError, match=re.escape("SpeedGrade.tRCD must be a MinTime, not 13.32")):
        replace(grade, tRCD=13.32)
    timing = grade.timing()
    with pytest.raises(ValueError, match=re.escape("Timing.BL must be 8 (DDR4 BL8), not 4")):
        replace(timing, BL=4)
    with pytest.raises(ValueError, match=re.escape("Timing.tRCD must be an integer in [1, 1048576], not 0")):
        replace(timing, tRCD=0)
    assert isinstance(timing, Timing)


def test_default_geometry_is_a_rank_of_8gb_x8_devices():
    geo = RankGeometry()
    assert (geo.bank_groups, geo.banks_per_group, geo.rows, geo.columns, geo.burst_bytes) == \
        (4, 4, 65536, 1024, 64)
    assert geo.banks == 16
    assert geo.bursts_per_row == 128                       # 1024 columns / BL8
    assert geo.row_bytes == 8192                           # 1 KB page x 8 devices
    assert geo.rank_bytes == 8 * 2**30                     # eight 8 Gb devices = 8 GiB


@pytest.mark.parametrize("field, value, message", [
    ("bank_groups", 3, "RankGeometry.bank_groups must be a power of two in [1, 4], not 3"),
    ("bank_groups", 8, "RankGeometry.bank_groups must be a power of two in [1, 4], not 8"),
    ("banks_per_group", 0, "RankGeometry.banks_per_group must be a power of two in [1, 4], not 0"),
    ("rows", 1 << 19, "RankGeometry.rows must be a power of two in [1, 262144], not 524288"),
    ("columns", 4, "RankGeometry.columns must be a power of two in [8, 1024], not 4"),
    ("burst_bytes", 48, "RankGeometry.burst_bytes must be a power of two in [8, 64], not 48"),
    ("rows", True, "RankGeometry.rows must be a power of two in [1, 262144], not True"),
])
def test_geometry_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RankGeometry(**{field: value})
