"""DDR4 device facts shared by the command engine (Amaranth generator) and the testbenches:
timing tables per speed grade (:mod:`.timing`) and the geometry of a rank (:mod:`.geometry`).
Pure Python, no Amaranth."""
from .geometry import RankGeometry
from .timing import (BURST_LENGTH, MAX_POSTPONED_REFRESHES, SPEED_GRADES, MinTime, SpeedGrade,
                     Timing, speed_grade)

__all__ = ["RankGeometry", "BURST_LENGTH", "MAX_POSTPONED_REFRESHES", "SPEED_GRADES", "MinTime",
           "SpeedGrade", "Timing", "speed_grade"]
