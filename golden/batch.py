"""Batches in FBGEMM's table-batched-embedding (TBE) layout, their checks and their files.

A batch of B samples over T tables:

* ``indices``  int64 or int32, every table's lookups concatenated, each index local to its
  table;
* ``offsets``  int64 or int32, length T*B+1, table-major: bag ``t*B + b`` is
  ``indices[offsets[t*B+b] : offsets[t*B+b+1]]``;
* ``per_sample_weights``  optional float32, one weight per index;
* ``batch_size``  B.

Batch files are ``.npz`` archives holding exactly those arrays (``batch_size`` as a 0-d
integer array).

int32 indices and offsets (which FBGEMM's TBE operator and PyTorch's EmbeddingBag take as
well as int64, each array its own) are widened to int64 when the batch is built, so that the
model computes with int64 only; the batch remembers each array's width
(``offsets_int32``, ``indices_int32``), the host lays the arrays out in DRAM in that width
and the NMP reads them so (an int32 array is half the beats of its int64 twin), and a batch
file is saved in it.
"""
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import BatchError, ErrorCode

__all__ = ["Batch", "load_batch", "save_batch", "read_arrays", "gather_bags", "check_window", "POOLINGS"]

POOLINGS = ("sum", "mean")

#: The dtypes that indices and offsets may come in; int32 is widened to int64 (and remembered).
INDEX_DTYPES = (np.int64, np.int32)


@dataclass(frozen=True, eq=False)
class Batch:
    """A batch (module docstring).  The widths of offsets and indices are taken from the
    dtypes of the arrays it is built with and the arrays are held as int64, so a Batch built
    from another one's arrays (``Batch(b.indices, ...)``, ``dataclasses.replace``) is int64:
    use :meth:`with_index_dtype` or :meth:`given` to keep a width."""
    indices: np.ndarray
    offsets: np.ndarray
    batch_size: int
    per_sample_weights: np.ndarray | None = None
    # the widths the arrays were given in (set from their dtypes; they are held as int64)
    offsets_int32: bool = field(init=False, default=False)
    indices_int32: bool = field(init=False, default=False)

    def __post_init__(self):
        self._check_layout()

    def with_index_dtype(self, dtype):
        """The same batch with offsets and indices of ``dtype`` (int32 or int64), as a host
        holding that width would give it; every value must fit."""
        dtype = np.dtype(dtype)
        if dtype not in INDEX_DTYPES:
            raise BatchError("index dtype", f"must be int32 or int64, not {dtype}")
        for name in ("offsets", "indices"):
            a = getattr(self, name)
            if len(a) and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max):
                raise BatchError(name, f"do not fit {dtype}: they range from {int(a.min())} to {int(a.max())}")
        return Batch(indices=self.indices.astype(dtype), offsets=self.offsets.astype(dtype),
                     batch_size=self.batch_size, per_sample_weights=self.per_sample_weights)

    def given(self, name):
        """Array ``name`` (offsets or indices) in the width it was given in."""
        return getattr(self, name).astype(np.int32 if getattr(self, f"{name}_int32") else np.int64)

    def window(self, size, index):
        """The batch of samples ``[index*size, (index+1)*size)`` of every table (a window of
        consecutive inputs), in this batch's widths."""
        B = self.batch_size
        check_window(size, index, B)
        spans = [(t * B + index * size, t * B + (index + 1) * size) for t in range(self.num_tables)]
        idx, offs, w = gather_bags(self.given("indices"), self.given("offsets"), spans, self.per_sample_weights)
        return Batch(idx, offs, size, w)

    def array_beats(self, name):
        """64-byte beats of array ``name`` (offsets, indices or per_sample_weights) in memory,
        from a beat boundary, in its width: the host's rule of an input array's size (the
        engine's is ``refree.hw.engine.memport.array_beats``)."""
        n, nbytes = len(getattr(self, name)), (4 if name == "per_sample_weights" or
                                                getattr(self, f"{name}_int32") else 8)
        return -(-n * nbytes // 64)

    # -- structure ---------------------------------------------------------------------
    @property
    def num_tables(self):
        return (len(self.offsets) - 1) // self.batch_size

    @property
    def weighted(self):
        return self.per_sample_weights is not None

    def bag_range(self, t, b):
        k = t * self.batch_size + b
        return int(self.offsets[k]), int(self.offsets[k + 1])

    def table_slice(self, t):
        """(indices, offsets rebased to 0, weights or None) of table t."""
        lo = int(self.offsets[t * self.batch_size])
        hi = int(self.offsets[(t + 1) * self.batch_size])
        offs = self.offsets[t * self.batch_size:(t + 1) * self.batch_size + 1] - lo
        w = None if self.per_sample_weights is None else self.per_sample_weights[lo:hi]
        return self.indices[lo:hi], offs, w

    # -- checks ------------------------------------------------------------------------
    def _check_layout(self):
        def dtype_check(name, arr, *dtypes):
            if not isinstance(arr, np.ndarray):
                raise BatchError(name, f"must be a numpy array, not {type(arr).__name__}")
            if arr.dtype not in dtypes:
                names = " or ".join(np.dtype(d).name for d in dtypes)
                raise BatchError(name, f"must have dtype {names}, not {arr.dtype}")
            if arr.ndim != 1:
                raise BatchError(name, f"must be one-dimensional, not of shape {arr.shape}")

        for name in ("indices", "offsets"):
            dtype_check(name, getattr(self, name), *INDEX_DTYPES)
            object.__setattr__(self, f"{name}_int32", getattr(self, name).dtype == np.int32)
            # (widened before the checks, so that they and everything after see int64 only)
            object.__setattr__(self, name, getattr(self, name).astype(np.int64, copy=False))
        B = self.batch_size
        if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
            raise BatchError("batch_size", f"must be a positive integer, not {B!r}")
        object.__setattr__(self, "batch_size", int(B))
        n = len(self.offsets)
        if n < B + 1 or (n - 1) % B:
            raise BatchError("offsets", f"length must be T*B+1 for B={B} and some T >= 1, not {n}",
                             ErrorCode.MALFORMED_OFFSETS)
        offs = self.offsets
        if offs[0] != 0:
            raise BatchError("offsets[0]", f"must be 0, not {int(offs[0])}", ErrorCode.MALFORMED_OFFSETS)
        step = np.diff(offs)
        if (step < 0).any():
            k = int(np.argmax(step < 0))
            raise BatchError(f"offsets[{k + 1}]",
                             f"decreases: {int(offs[k + 1])} after {int(offs[k])}",
                             ErrorCode.MALFORMED_OFFSETS)
        if offs[-1] != len(self.indices):
            raise BatchError(f"offsets[{n - 1}]",
                             f"must equal len(indices) = {len(self.indices)}, not {int(offs[-1])}",
                             ErrorCode.MALFORMED_OFFSETS)
        if self.per_sample_weights is not None:
            dtype_check("per_sample_weights", self.per_sample_weights, np.float32)
            if len(self.per_sample_weights) != len(self.indices):
                raise BatchError("per_sample_weights",
                                 f"length must equal len(indices) = {len(self.indices)}, "
                                 f"not {len(self.per_sample_weights)}")

    def check_against(self, num_rows, poolings):
        """Check the batch against the tables it will run on.

        num_rows: rows of each table; poolings: "sum" or "mean" per table.
        """
        T = self.num_tables
        if len(num_rows) != T:
            raise BatchError("offsets", f"describe {T} tables of {self.batch_size} bags, "
                             f"but {len(num_rows)} tables were given")
        if len(poolings) != T:
            raise BatchError("pooling", f"needs one mode per table ({T}), not {len(poolings)}")
        for t, p in enumerate(poolings):
            if p not in POOLINGS:
                raise BatchError(f"pooling[{t}]", f"must be one of {POOLINGS}, not {p!r}")
        if self.weighted and any(p != "sum" for p in poolings):
            raise BatchError("per_sample_weights", "are allowed only when every table pools by sum, "
                             f"not with poolings {list(poolings)}", ErrorCode.WEIGHTS_WITH_MEAN)
        for t in range(T):
            idx, _, _ = self.table_slice(t)
            bad = (idx < 0) | (idx >= num_rows[t])
            if bad.any():
                k = int(np.argmax(bad)) + int(self.offsets[t * self.batch_size])
                raise BatchError(f"indices[{k}]",
                                 f"{int(self.indices[k])} is outside table {t} of {num_rows[t]} rows",
                                 ErrorCode.INDEX_OUT_OF_RANGE)


def check_window(size, index, B):
    """A window of ``size`` samples, the ``index``-th, must lie within B samples."""
    if isinstance(size, bool) or size < 1 or index < 0 or (index + 1) * size > B:
        raise BatchError("batch_size", f"a window of {size} samples, the {index}-th, does not fit the "
                                       f"B = {B} samples")


def gather_bags(indices, offsets, spans, weights=None):
    """The bags ``[first, last)`` of each span of a TBE layout (global, table-major
    ``offsets``; array-likes that slice as numpy's do), one after another: ``(indices,
    offsets, weights or None)``, the offsets rebased to the running total, every array in
    its dtype.  The one rule of cutting tables and samples out of a batch (windows, and the
    tables selected from Meta's files, as FBGEMM slices them)."""
    idx, offs, w = [], [np.zeros(1, np.asarray(offsets[:1]).dtype)], []
    for first, last in spans:
        bounds = np.asarray(offsets[first:last + 1])
        idx.append(np.asarray(indices[int(bounds[0]):int(bounds[-1])]))
        offs.append(bounds[1:] - bounds[0] + offs[-1][-1])
        if weights is not None:
            w.append(weights[int(bounds[0]):int(bounds[-1])])
    return (np.concatenate(idx), np.concatenate(offs).astype(offs[0].dtype),
            None if weights is None else np.concatenate(w))


# What numpy raises on a damaged or hostile file: unreadable, truncated (the zip's central
# directory or a member cut short), not an array file, or an object array (no pickles);
# RuntimeError: an encrypted member, or a zip feature Python cannot read (NotImplementedError);
# MemoryError: a header that declares a shape too large to allocate; SyntaxError, TokenError:
# an .npy header that numpy's parser (ast, then tokenize) cannot read.
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, RuntimeError, MemoryError, SyntaxError,
               tokenize.TokenError, zipfile.BadZipFile, zlib.error)

# How array files begin: a zip (an .npz; an empty zip has only its end record), an .npy.
# numpy takes anything else for a pickle, and its refusal would say so.
_ARRAY_FILE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")


def read_arrays(path, field):
    """The array of an ``.npy`` file, or every array of an ``.npz`` file as a dict, read at
    once, so that a damaged file fails here with a :class:`BatchError` naming ``field``."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(max(_ARRAY_FILE_MAGIC, key=len)))
    except OSError as e:
        raise BatchError(field, f"cannot read {str(path)!r} ({e.strerror})") from None
    if not head.startswith(_ARRAY_FILE_MAGIC):
        what = "is empty" if not head else "is neither an .npz (a zip) nor an .npy array file"
        raise BatchError(field, f"{str(path)!r} {what}")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            arrays = {name: data[name] for name in data.files}
    except _UNREADABLE as e:
        raise BatchError(field, f"cannot read {str(path)!r} as an array file ({type(e).__name__}: {e})") from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):       # (numpy hands over such members as bytes)
            raise BatchError(field, f"{str(path)!r} holds {name!r}, which is not an .npy array")
    return arrays


def load_batch(path):
    """Read a batch file (``.npz``); errors name the missing or malformed field, and the file."""
    f = read_arrays(path, "batch")
    if isinstance(f, np.ndarray):
        raise BatchError("batch", f"{str(path)!r} is one .npy array, not an .npz batch file")
    try:
        for name in ("indices", "offsets", "batch_size"):
            if name not in f:
                raise BatchError(name, "missing")
        bs = f["batch_size"]
        if bs.shape != () or not np.issubdtype(bs.dtype, np.integer):
            raise BatchError("batch_size", f"must be one integer, not {bs!r}")
        return Batch(indices=f["indices"], offsets=f["offsets"], batch_size=int(bs),
                     per_sample_weights=f.get("per_sample_weights"))
    except BatchError as e:
        raise BatchError(e.field, f"{e.message} (batch file {path})", e.code) from None


def save_batch(path, batch):
    arrays = dict(indices=batch.given("indices"), offsets=batch.given("offsets"),
                  batch_size=np.int64(batch.batch_size))
    if batch.per_sample_weights is not None:
        arrays["per_sample_weights"] = batch.per_sample_weights
    np.savez(path, **arrays)
