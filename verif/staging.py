"""Host side of the engine's memory: where the batch, the tables and the outputs live.

Packs a batch and its tables into 64-byte beats (a dict ``beat address -> int``, lane 0 in
the low bits), gives the engine's configuration, and reads results back.  Used by the
Amaranth-simulator and cocotb testbenches alike.
"""
from dataclasses import dataclass

import numpy as np

from refree.hw.engine.staging import staging_beat, staging_beats

__all__ = ["StagingLayout", "layout", "pack", "unpack_rows", "unpack_staging_rows", "unpack_state", "BEAT_BYTES",
           "hot_row_beats", "fit_hot_beats", "TableShape"]

BEAT_BYTES = 64


def _beats(nbytes):
    return -(-nbytes // BEAT_BYTES)


@dataclass(frozen=True)
class StagingLayout:
    """Beat addresses of every array (tables are padded to whole beats per row)."""
    offsets: int
    indices: int
    weights: int             # (no beats when the batch has no weights)
    pooled: int
    grad: int
    tables: tuple            # (base, rows, stride) per table
    row_beats: int
    end: int
    states: tuple = ()       # Adagrad state array per table (16 per beat), if any
    pooled_beats: int = 0    # beats of the pooled output (B x T rows, in whole groups of `stripe` rows)
    stripe: int = 1          # of the staging rows (pooled output, gradient): refree.hw.engine.staging

    def outputs(self):
        """Beat addresses that a step may write: the pooled output, the tables and the
        Adagrad states."""
        beats = list(range(self.pooled, self.pooled + self.pooled_beats))
        for base, rows, stride in self.tables:
            beats += range(base, base + rows * stride)
        for base, (_, rows, _) in zip(self.states, self.tables):
            beats += range(base, base + -(-rows // 16))
        return beats


ALIGN_BEATS = 16
"""Every array starts on a multiple of 16 beats (1 KB): a table row never straddles the
chunks that the DRAM side's address mapping keeps in one rank (up to 16 beats)."""


class TableShape:
    """A table's shape without its values (a layout needs only rows and D)."""
    def __init__(self, rows, dim):
        self.shape = (rows, dim)


def layout(batch, tables, with_state=False, stripe=1):
    """Every array in turn from beat 0; the pooled output and the gradient with the engine's
    staging ``stripe``."""
    D = tables[0].shape[1]
    row_beats = _beats(4 * D)
    T, B = batch.num_tables, batch.batch_size
    a = 0

    def take(beats):
        nonlocal a
        start = a
        a = -(-(a + beats) // ALIGN_BEATS) * ALIGN_BEATS
        return start

    offsets = take(batch.array_beats("offsets"))
    indices = take(max(batch.array_beats("indices"), 1))
    weights = take(max(batch.array_beats("per_sample_weights"), 1) if batch.weighted else 0)
    staged = staging_beats(B * T, row_beats, stripe)
    pooled = take(staged)
    grad = take(staged)
    descs = [(take(E.shape[0] * row_beats), E.shape[0], row_beats) for E in tables]
    states = [take(_beats(4 * E.shape[0])) for E in tables] if with_state else []
    return StagingLayout(offsets, indices, weights, pooled, grad, tuple(descs), row_beats, a, tuple(states),
                         staged, stripe)


def _to_beats(raw, base):
    """bytes -> {beat address: int} from `base`, zero-padded to whole beats."""
    raw = raw + bytes(-len(raw) % BEAT_BYTES)
    return {base + k: int.from_bytes(raw[k * BEAT_BYTES:(k + 1) * BEAT_BYTES], "little")
            for k in range(len(raw) // BEAT_BYTES)}


def _rows_to_beats(rows, row_beats, base):
    padded = np.zeros((rows.shape[0], row_beats * 16), np.float32)
    padded[:, :rows.shape[1]] = rows
    return _to_beats(padded.astype("<f4").tobytes(), base)


def _staging_address(lay, base, k):
    """Beat address of the k-th beat, in row-major order, of the staging array at ``base``."""
    return staging_beat(base, k // lay.row_beats, k % lay.row_beats, lay.row_beats, lay.stripe)


def _staging_rows_to_beats(rows, lay, base):
    packed = _rows_to_beats(rows, lay.row_beats, 0)
    return {_staging_address(lay, base, k): v for k, v in packed.items()}


def unpack_staging_rows(mem, lay, base, rows, dim):
    """float32 (rows, dim) of the staging array at ``base`` (the pooled output) read back."""
    raw = b"".join(mem.get(_staging_address(lay, base, k), 0).to_bytes(BEAT_BYTES, "little")
                   for k in range(rows * lay.row_beats))
    return np.frombuffer(raw, "<f4").reshape(rows, lay.row_beats * 16)[:, :dim].copy()


def pack(batch, tables, lay, grad=None, state=None):
    """The memory image of a batch, its tables and (optionally) the upstream gradient
    ``(B, T*D)`` and the Adagrad state per table."""
    mem = {}
    for s, base in zip(state or (), lay.states):
        mem.update(_to_beats(np.asarray(s, "<f4").tobytes(), base))
    if grad is not None:
        mem.update(_staging_rows_to_beats(grad.reshape(-1, tables[0].shape[1]), lay, lay.grad))
    for name, base in (("offsets", lay.offsets), ("indices", lay.indices)):     # (int32 or int64, as given)
        given = batch.given(name)
        mem.update(_to_beats(given.astype(given.dtype.newbyteorder("<")).tobytes(), base))
    if batch.weighted:
        mem.update(_to_beats(batch.per_sample_weights.astype("<f4").tobytes(), lay.weights))
    for E, (base, rows, stride) in zip(tables, lay.tables):
        mem.update(_rows_to_beats(E, stride, base))
    return mem


def unpack_state(mem, base, rows):
    """float32 (rows,) of an Adagrad state array read back."""
    raw = b"".join(mem.get(base + k, 0).to_bytes(BEAT_BYTES, "little") for k in range(_beats(4 * rows)))
    return np.frombuffer(raw, "<f4")[:rows].copy()


def unpack_rows(mem, base, rows, row_beats, dim):
    """float32 (rows, dim) read back from `rows` rows of `row_beats` beats at `base`."""
    raw = b"".join(mem.get(base + k, 0).to_bytes(BEAT_BYTES, "little") for k in range(rows * row_beats))
    return np.frombuffer(raw, "<f4").reshape(rows, row_beats * 16)[:, :dim].copy()


def hot_row_beats(hot_rows, lay):
    """The beat addresses of hot rows (per table, an array of rows; FAE's hot set, as
    ``refree profile --out`` writes it) in ``lay``, table by table, a row's beats in order:
    what the hot-row store's load job lists.  Raises BatchError, naming the table, for a row
    outside its table, a row listed twice or a table the layout does not have."""
    from refree.golden.errors import BatchError
    if len(hot_rows) > len(lay.tables):
        raise BatchError("hot set", f"has rows of {len(hot_rows)} tables; the batch has {len(lay.tables)}")
    beats = []
    for t, (rows, (base, n, stride)) in enumerate(zip(hot_rows, lay.tables)):
        rows = np.asarray(rows)
        bad = (rows < 0) | (rows >= n)          # (before a cast: a uint64 row stays itself)
        if bad.any():
            raise BatchError(f"hot rows of table {t}", f"row {int(rows[bad][0])} is outside table {t} of {n} rows")
        rows = rows.astype(np.int64)
        if len(np.unique(rows)) < len(rows):
            u, c = np.unique(rows, return_counts=True)
            raise BatchError(f"hot rows of table {t}", f"row {int(u[c > 1][0])} is listed twice")
        beats += [base + int(r) * stride + k for r in rows for k in range(lay.row_beats)]
    return beats


def fit_hot_beats(hot_rows, lay, addr_bits, store):
    """The hot rows that a hot-row store (``store``: its HotStoreParams) holds, a row whole
    or not at all by the store's ``placement``, in the order given (a row whose set is full
    is left out): ``(beats, kept)``, their beat addresses and per table the rows kept.
    Checked as :func:`hot_row_beats`."""
    from refree.hw.lrdimm.hot_row_store import placement
    used, beats, kept = {}, [], []
    listed = iter(hot_row_beats(hot_rows, lay))
    for rows in hot_rows:
        keep = []
        for r in rows:
            row = [next(listed) for _ in range(lay.row_beats)]
            if isinstance(placement(row, addr_bits, store.beats, store.ways, used), list):
                beats += row
                keep.append(r)
        kept.append(np.array(keep, np.int64))
    return beats, tuple(kept)
