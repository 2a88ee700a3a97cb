"""Where a 64-byte beat of the engine's address space lives in DRAM: rank, bank group, bank,
row and column.  One source for the command engine's decoder (bit fields of the beat
address) and for the testbenches and host tools (:meth:`AddressMapping.locate`).

The beat address, low bits first::

    | bg0 | col_lo | rank | col_hi | bg_hi | ba | row |

* ``bg0``, the low bank-group bit: consecutive beats alternate between two bank groups, so
  back-to-back bursts are ``tCCD_S`` apart, not ``tCCD_L`` (6 clocks at DDR4-2400, 8 at
  DDR4-3200, against the 4 a burst holds the bus);
* ``chunk_beats`` consecutive beats (``bg0`` and ``col_lo``; default 4: 256 bytes, one table
  row at D = 64) stay in one rank, so a table row is one rank's burst train needing two
  ACTs (one per bank group), within the tFAW budget of four per row's transfer; the ranks,
  each with its own data path to the NMP (the RecNMP assumption), fetch different rows in
  parallel;
* the rest of the columns next, so a sequential stream (staging arrays) stays in open
  rows; bank and row bits last.
"""
from dataclasses import dataclass, field

from .geometry import RankGeometry

__all__ = ["AddressMapping"]


def _log2(n):
    return n.bit_length() - 1


@dataclass(frozen=True)
class AddressMapping:
    """The beat-address fields of ``ranks`` ranks of ``geometry`` (see the module docstring).

    The command engine takes the same fields as a decoded location (the decode is a
    permutation of address bits: no logic).

    Parameters
    ----------
    ranks:
        Ranks of the LRDIMM, a power of two in [1, 8].
    chunk_beats:
        Consecutive beats kept in one rank, a power of two from 2 (1 with a single bank
        group) to the bursts of a DRAM row in each of the two bank groups of ``bg0``.
    geometry:
        The geometry of every rank.
    """
    ranks: int = 1
    chunk_beats: int = 4
    geometry: RankGeometry = field(default_factory=RankGeometry)

    def __post_init__(self):
        if not isinstance(self.geometry, RankGeometry):
            raise ValueError(f"AddressMapping.geometry must be a RankGeometry, not {self.geometry!r}")
        g = self.geometry
        lo_chunk = 2 if g.bank_groups > 1 else 1        # bg0 is inside the chunk
        for name, lo, hi in (("ranks", 1, 8), ("chunk_beats", lo_chunk, lo_chunk * g.bursts_per_row)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi or v & (v - 1):
                raise ValueError(f"AddressMapping.{name} must be a power of two in [{lo}, {hi}], "
                                 f"not {v!r}")

    @property
    def fields(self):
        """``[(name, width)]`` of the beat address, low bits first."""
        g = self.geometry
        bg0 = 1 if g.bank_groups > 1 else 0
        col_lo = _log2(self.chunk_beats) - bg0
        return [("bg0", bg0), ("col_lo", col_lo), ("rank", _log2(self.ranks)),
                ("col_hi", _log2(g.bursts_per_row) - col_lo),
                ("bg_hi", _log2(g.bank_groups) - bg0), ("ba", _log2(g.banks_per_group)),
                ("row", _log2(g.rows))]

    @property
    def staging_stripe(self):
        """The stripe of the staging rows (:mod:`refree.hw.engine.staging`): the chunk when
        there are several ranks, so a pooled or gradient row's beats lie on successive
        ranks; 1 (row-major, a row's beats in one chunk, alternating bank groups) with one."""
        return self.chunk_beats if self.ranks > 1 else 1

    @property
    def addr_bits(self):
        """Width of a beat address that covers every rank."""
        return sum(w for _, w in self.fields)

    @property
    def total_beats(self):
        return 1 << self.addr_bits

    def offsets(self):
        """``{name: (offset, width)}`` of the fields."""
        out, pos = {}, 0
        for name, width in self.fields:
            out[name] = (pos, width)
            pos += width
        return out

    def locate(self, beat):
        """``(rank, bg, ba, row, col)`` of beat address ``beat``; ``col`` is the first column
        of its BL8 burst (a multiple of 8)."""
        if isinstance(beat, bool) or not isinstance(beat, int) or not 0 <= beat < self.total_beats:
            raise ValueError(f"beat address must be an integer in [0, {self.total_beats}), "
                             f"not {beat!r}")
        f = {name: (beat >> off) & ((1 << w) - 1) for name, (off, w) in self.offsets().items()}
        burst = (f["col_hi"] << self.offsets()["col_lo"][1]) | f["col_lo"]
        bg = (f["bg_hi"] << self.offsets()["bg0"][1]) | f["bg0"]
        return f["rank"], bg, f["ba"], f["row"], 8 * burst

    def address(self, rank, bg, ba, row, col):
        """The beat address of a burst: the inverse of :meth:`locate`."""
        off = self.offsets()
        lo_col, lo_bg = off["col_lo"][1], off["bg0"][1]
        burst = col // 8
        f = {"bg0": bg & ((1 << lo_bg) - 1), "col_lo": burst & ((1 << lo_col) - 1), "rank": rank,
             "col_hi": burst >> lo_col, "bg_hi": bg >> lo_bg, "ba": ba, "row": row}
        beat = 0
        for name, (o, w) in off.items():
            if not 0 <= f[name] < 1 << w:
                raise ValueError(f"{name} must be in [0, {1 << w}), not {f[name]!r}")
            beat |= f[name] << o
        return beat
