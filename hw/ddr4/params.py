"""The DRAM side's generator parameters, validated, with documented defaults."""
from dataclasses import dataclass

from .geometry import RankGeometry
from .mapping import AddressMapping
from .rank_controller import check_controller_params
from .timing import MAX_POSTPONED_REFRESHES, speed_grade

__all__ = ["DramParams"]


@dataclass(frozen=True)
class DramParams:
    """Parameters of the DRAM side of the buffer chip.

    Parameters
    ----------
    grade:
        Speed grade of the ranks (a key of :data:`~refree.hw.ddr4.timing.SPEED_GRADES`);
        the whole chip runs at its clock (tCK), one DDR4 command slot a clock.
    ranks:
        Ranks of the LRDIMM, each with its own data path to the NMP (1, 2, 4 or 8).
    chunk_beats:
        Consecutive 64-byte beats kept in one rank (see
        :class:`~refree.hw.ddr4.mapping.AddressMapping`); with several ranks also the stripe
        of the staging rows the host lays out (``AddressMapping.staging_stripe``).
    rows:
        Rows per bank of each rank (a power of two; 65536 for 8 Gb x8 devices).
    window, read_depth, write_high, write_low, postpone_limit:
        Of each rank's command engine (:class:`~refree.hw.ddr4.rank_controller.RankController`):
        its request window, its reorder buffer, the write watermarks (``0 <= write_low <
        write_high <= window``) and the REFs it may postpone.
    """
    grade: str = "DDR4-2400"
    ranks: int = 1
    chunk_beats: int = 4
    rows: int = 1 << 16
    window: int = 24
    read_depth: int = 32
    write_high: int = 16
    write_low: int = 8
    postpone_limit: int = MAX_POSTPONED_REFRESHES

    def __post_init__(self):
        speed_grade(self.grade)                  # ValueError naming the known grades
        self.mapping                             # checks ranks, chunk_beats and rows
        check_controller_params("DramParams.", **self.controller_kwargs())

    @property
    def timing(self):
        return speed_grade(self.grade).timing()

    @property
    def geometry(self):
        return RankGeometry(rows=self.rows)

    @property
    def mapping(self):
        return AddressMapping(self.ranks, self.chunk_beats, self.geometry)

    def controller_kwargs(self):
        return dict(window=self.window, read_depth=self.read_depth, write_high=self.write_high,
                    write_low=self.write_low, postpone_limit=self.postpone_limit)
