"""Error codes shared by the golden model, the host tools and (later) the RTL's status register.

Pure Python on purpose: `hw/` may import this module without pulling in numpy.
"""
import enum

__all__ = ["ErrorCode", "BatchError", "MAX_ROW_GROUP_BITS"]

#: The most row groups a table's backward by rows may take: 2**MAX_ROW_GROUP_BITS (the
#: engine's table descriptor holds log2 G; past it, ROW_GROUP_TOO_LARGE).
MAX_ROW_GROUP_BITS = 15


class ErrorCode(enum.IntEnum):
    """Values of the engine's error code register (0 = no error)."""
    OK = 0
    INDEX_OUT_OF_RANGE = 1
    MALFORMED_OFFSETS = 2
    BAG_TOO_LONG = 3
    ACCESS_OUTSIDE_TABLES = 4
    ROW_GROUP_TOO_LARGE = 5     # backward by rows: a row group does not fit a part's buffers
    WEIGHTS_WITH_MEAN = 6       # per-sample weights, but a table pools by mean
    ADAGRAD_IN_BASELINE = 7     # row-wise Adagrad has no per-occurrence (baseline) form
    # the hot-row store's load job (hw/lrdimm/hot_row_store.py): nothing is loaded
    HOT_DUPLICATE = 8           # a beat address twice in the hot set
    HOT_SET_FULL = 9            # every way of a beat's set already taken
    HOT_NOT_EMPTY = 10          # a load into a store that holds beats (flush first)
    HOT_TOO_MANY = 11           # more beats than the store holds
    # Slipstream's stale set (hw/engine/stale_set.py), loaded by a backward job: nothing written
    STALE_SET_FULL = 12         # a (table, row) pair of the list found its set full


class BatchError(ValueError):
    """A batch, table or step argument that the engine must refuse.

    ``field`` names the offending input (``"offsets"``, ``"indices[17]"``, ``"lr"``, ...),
    ``code`` is the engine error code the hardware would raise for it (``None`` for inputs
    that only the host tools see, such as a wrong dtype).
    """

    def __init__(self, field, message, code=None):
        self.field = field
        self.message = message
        self.code = code
        super().__init__(f"{field}: {message}")
