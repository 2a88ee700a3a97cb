"""Geometry of one DDR4 rank: bank groups, banks, rows, columns and the burst size."""
from dataclasses import dataclass

from .timing import BURST_LENGTH

__all__ = ["RankGeometry"]


@dataclass(frozen=True)
class RankGeometry:
    """Addressing of one rank.  The defaults are a rank of eight 8 Gb x8 devices (1 KB page
    each): 4 bank groups of 4 banks, 65536 rows, 1024 columns, a 64-bit data bus.

    Parameters
    ----------
    bank_groups:
        Bank groups (BG address bits), a power of two in [1, 4].
    banks_per_group:
        Banks in each bank group (BA address bits), a power of two in [1, 4].
    rows:
        Rows per bank, a power of two in [1, 2**18].
    columns:
        Column addresses per row, a power of two in [8, 1024].  A BL8 burst covers 8 of
        them, so a RD or WR names a column that is a multiple of 8.
    burst_bytes:
        Bytes of one BL8 burst across the rank's data bus (8 beats of 8 bytes for a 64-bit
        bus), a power of two in [8, 64].
    """
    bank_groups: int = 4
    banks_per_group: int = 4
    rows: int = 1 << 16
    columns: int = 1024
    burst_bytes: int = 64

    def __post_init__(self):
        ranges = {"bank_groups": (1, 4), "banks_per_group": (1, 4), "rows": (1, 1 << 18),
                  "columns": (BURST_LENGTH, 1024), "burst_bytes": (8, 64)}
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi
                    or v & (v - 1)):
                raise ValueError(f"RankGeometry.{name} must be a power of two in [{lo}, {hi}], "
                                 f"not {v!r}")

    @property
    def banks(self):
        """Banks of the rank."""
        return self.bank_groups * self.banks_per_group

    @property
    def bursts_per_row(self):
        """BL8 bursts in one row."""
        return self.columns // BURST_LENGTH

    @property
    def row_bytes(self):
        """Bytes of one row across the rank (the page of every device together)."""
        return self.bursts_per_row * self.burst_bytes

    @property
    def rank_bytes(self):
        """Bytes of the whole rank."""
        return self.banks * self.rows * self.row_bytes
