"""Generator parameters of the engine, validated once, with documented defaults."""
from dataclasses import dataclass

from amaranth.hdl import Signal

__all__ = ["EngineParams", "counter_signal"]


def _bits(n):
    """Bits to hold the values 0 .. n."""
    return max(1, int(n).bit_length())


def counter_signal(n, *, src_loc_at=0, **kwargs):
    """A Signal for the values 0 .. n-1, one bit at least: with n = 1 (a row of one beat) a
    zero-width signal would reach the Verilog as an ascending range ``[-1:0]``."""
    return Signal(range(max(n, 2)), src_loc_at=1 + src_loc_at, **kwargs)


@dataclass(frozen=True)
class EngineParams:
    """Parameters of the engine.

    Parameters
    ----------
    index_width:
        Bits of a table index (row number) inside the engine; indices of the batch must fit.
    max_bags, max_lookups, max_distinct_rows, max_bag_len:
        The part limits of docs/design.md section 2 (same meaning as
        :class:`refree.golden.planner.PartLimits`): they size the on-chip buffers.
    radix_bits:
        Digit width of the analyzer's radix sort (:mod:`.sorter`): a walk over the elements
        per pass that is needed after the first (built as the elements are created);
        2**radix_bits bucket lists in each of two banks.
    hash_entries_per_row:
        Entries of the analyzer's hash table per distinct-row slot (a power of two, at least
        2: the table is at most half full).  Each probe past the first costs an insertion a
        cycle: a sparser table meets fewer.
    """
    index_width: int = 32
    max_bags: int = 256
    max_lookups: int = 4096
    max_distinct_rows: int = 1024
    max_bag_len: int = 64
    radix_bits: int = 8
    hash_entries_per_row: int = 2

    def __post_init__(self):
        ranges = {
            "index_width": (1, 63), "max_bags": (1, 1 << 20), "max_lookups": (1, 1 << 24),
            "max_distinct_rows": (1, 1 << 20), "max_bag_len": (1, 1 << 16), "radix_bits": (1, 12),
            "hash_entries_per_row": (2, 16),
        }
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"EngineParams.{name} must be an integer in [{lo}, {hi}], not {v!r}")
        if self.hash_entries_per_row & (self.hash_entries_per_row - 1):
            raise ValueError(f"EngineParams.hash_entries_per_row must be a power of two, "
                             f"not {self.hash_entries_per_row!r}")
        if self.max_bag_len > self.max_lookups:
            raise ValueError(f"EngineParams.max_bag_len ({self.max_bag_len}) must not exceed "
                             f"max_lookups ({self.max_lookups})")
        # A bag that fits the length limit then always fits a part's distinct rows, so the
        # batch check (before any write) catches every bag that no part can hold.
        if self.max_bag_len > self.max_distinct_rows:
            raise ValueError(f"EngineParams.max_bag_len ({self.max_bag_len}) must not exceed "
                             f"max_distinct_rows ({self.max_distinct_rows})")

    # Derived widths, so every block sizes its memories the same way.
    @property
    def slot_capacity(self):
        """Distinct-row slots (a lookup that would need one more closes the part)."""
        return self.max_distinct_rows

    @property
    def hash_depth(self):
        """Entries of the analyzer's hash table: a power of two, at least ``hash_entries_per_row`` a slot."""
        return 1 << (self.hash_entries_per_row * self.slot_capacity - 1).bit_length()

    @property
    def bag_bits(self):
        return _bits(self.max_bags - 1)

    @property
    def bag_count_bits(self):
        return _bits(self.max_bags)

    @property
    def slot_bits(self):
        return _bits(self.slot_capacity - 1)

    @property
    def pair_bits(self):
        return _bits(self.max_lookups - 1)

    @property
    def mult_bits(self):
        return _bits(self.max_bag_len)
