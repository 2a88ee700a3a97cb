"""Meta's ``dlrm_datasets`` files: the loader, and the format's writer (for the sample).

``facebookresearch/dlrm_datasets`` publishes embedding-lookup traces of production
ads-model training (2021: ``fbgemm_t856_bs65536*.pt.gz``, 856 tables, B = 65,536; 2022:
``fbgemm_t788_bs131072_{0..15}.pt.gz``, 788 tables, B = 131,072; MIT licence).  Each file is
``gzip`` around ``torch.save((indices, offsets, lengths))``:

* ``lengths``: shape ``[T, B]``, the length of every bag;
* ``offsets``: 1-D, ``T*B + 1``, table-major and global (not reset per table): bag ``b`` of
  table ``t`` is ``indices[offsets[t*B + b] : offsets[t*B + b + 1]]``;
* ``indices``: 1-D, each index local to its table.

The dtype is not documented, so both int32 and int64 are taken and kept (the NMP reads int32
in its width).  A table's slice is FBGEMM's (``fbgemm_gpu/tbe/utils/requests.py``,
``generate_requests_from_data_file``): ``offsets[B*t : B*(t+1) + 1]``, rebased to the
selection's running total.  The files carry no table sizes: a table's rows are taken as its
largest index in the whole file + 1 (the same for every window of the file).

The real files are 1 to 3.5 GB (Git LFS) and not downloadable here;
``golden/data/dlrm-sample.pt.gz`` is a small synthetic file in exactly this format
(:func:`write_sample`), made from the Meta-calibrated trace.

Large files: a ``.pt.gz`` is first decompressed into a temporary file (``refree convert``:
beside its output; else in the system's temporary folder, ``TMPDIR``), then opened with
``torch.load(..., mmap=True)``, so that only what the selection needs is read into memory:
the whole file's offsets are only mapped, each selected table's offsets, lengths and indices
are read (its indices whole, for its rows), and nothing of the other tables (a file in
torch's legacy format, which cannot be mapped, is read whole).  ``torch.load`` runs with ``weights_only=True``:
a file holding anything but tensors is refused, never executed.
"""
import gzip
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .batch import Batch, INDEX_DTYPES, check_window, gather_bags
from .errors import BatchError

__all__ = ["is_dlrm_file", "DlrmSelection", "load_dlrm", "write_dlrm_file", "write_sample", "SAMPLE_PATH"]

SUFFIXES = (".pt.gz", ".pt")
SAMPLE_PATH = Path(__file__).parent / "data" / "dlrm-sample.pt.gz"
#: how the sample is made (write_sample): the Meta-calibrated trace's law, seed, T and B
SAMPLE_TRACE = {"seed": 7, "num_tables": 3, "batch_size": 256}


def is_dlrm_file(path):
    """A path named as a dlrm_datasets file (``.pt.gz``, or ``.pt`` already decompressed)."""
    return str(path).endswith(SUFFIXES)


@dataclass(frozen=True)
class DlrmSelection:
    """Which part of a file to take: ``tables`` (indices into the file's tables, in the order
    given; None: all), and a window of ``batch_size`` samples (None: all B), the
    ``batch_index``-th of the file's B samples."""
    tables: tuple[int, ...] | None = None
    batch_size: int | None = None
    batch_index: int = 0


def _torch():
    try:
        import torch
    except ImportError:
        raise BatchError("batch", "reading a dlrm_datasets file needs torch (pip install torch==2.13.0, "
                                  "the CPU wheel; `make` installs it)") from None
    return torch


def _open_tensors(path, scratch):
    """(indices, offsets, lengths) of the file, as torch tensors (mapped when possible)."""
    torch = _torch()
    name = str(path)
    try:
        if name.endswith(".gz"):
            plain = scratch / "trace.pt"
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
        else:
            plain = Path(path)
        try:
            data = torch.load(plain, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zipfile" not in str(e):
                raise
            data = torch.load(plain, map_location="cpu", weights_only=True)    # (the legacy format)
    except FileNotFoundError:
        raise BatchError("batch", f"cannot read {name!r} (no such file)") from None
    except Exception as e:      # (a damaged or foreign file fails in many ways: gzip, zip, unpickling)
        detail = ("it holds more than tensors, or is no torch.save file" if isinstance(e, pickle.UnpicklingError)
                  else (str(e).strip().splitlines() or [""])[0][:160])
        raise BatchError("batch", f"{name!r} is not a dlrm_datasets file (gzip around torch.save of "
                                  f"indices, offsets, lengths): {type(e).__name__}: {detail}") from None
    if not isinstance(data, (tuple, list)) or len(data) != 3 or not all(isinstance(x, torch.Tensor) for x in data):
        what = type(data).__name__ + (f" of {len(data)}" if isinstance(data, (tuple, list)) else "")
        raise BatchError("batch", f"{name!r} must hold (indices, offsets, lengths), three tensors, not a {what}")
    return data


def _checked(path, indices, offsets, lengths):
    """The file's T and B, after the format's checks that cost nothing per bag (dtypes,
    shapes, the ends of the offsets); :func:`_table_checked` checks each table taken."""
    torch, name = _torch(), str(path)
    for what, x in (("indices", indices), ("offsets", offsets), ("lengths", lengths)):
        if x.dtype not in (torch.int32, torch.int64) or x.layout != torch.strided:
            raise BatchError(what, f"of {name!r} must be a dense int32 or int64 tensor, not {x.dtype} ({x.layout})")
    if indices.dim() != 1 or offsets.dim() != 1 or lengths.dim() != 2:
        raise BatchError("batch", f"{name!r}: indices and offsets must be 1-D and lengths [T, B], not of shapes "
                                  f"{tuple(indices.shape)}, {tuple(offsets.shape)}, {tuple(lengths.shape)}")
    T, B = lengths.shape
    if T < 1 or B < 1 or len(offsets) != T * B + 1:
        raise BatchError("offsets", f"of {name!r}: {len(offsets)} of them for lengths of shape [{T}, {B}] "
                                    f"(T*B+1 = {T * B + 1} wanted)")
    offs = offsets.numpy()
    if offs[0] != 0 or offs[-1] != len(indices):
        raise BatchError("offsets", f"of {name!r} must run from 0 to len(indices) = {len(indices)}, not from "
                                    f"{int(offs[0])} to {int(offs[-1])}")
    return T, B


def _table_checked(path, t, indices, offsets, lengths):
    """Table ``t``'s offsets against its lengths, and its indices (all of the table's,
    which give its rows); returns its rows."""
    name, B = str(path), lengths.shape[1]
    offs = offsets.numpy()[B * t:B * (t + 1) + 1]
    steps, want = np.diff(offs), lengths[t].numpy()
    bad = steps != want
    if bad.any():
        k = int(np.argmax(bad))
        raise BatchError("lengths", f"of {name!r}: bag {t * B + k} (table {t}, sample {k}) has {int(steps[k])} "
                                    f"indices by the offsets but length {int(want[k])}")
    whole = indices[int(offs[0]):int(offs[-1])].numpy()
    if len(whole) and whole.min() < 0:
        raise BatchError("indices", f"of table {t} of {name!r} include {int(whole.min())}, which is negative")
    return max(int(whole.max(initial=-1)) + 1, 1)


def load_dlrm(path, selection=DlrmSelection(), scratch_dir=None):
    """A dlrm_datasets file (or a window of it) as a :class:`refree.golden.traces.Trace`:
    the selected tables' bags in the selected samples, offsets and indices in the file's
    dtype, each table's rows its largest index in the file + 1.

    ``scratch_dir``: where a ``.pt.gz`` is decompressed for mapping (default: the system's
    temporary folder); the decompressed copy is removed afterwards."""
    from .traces import Trace
    with tempfile.TemporaryDirectory(prefix="refree-dlrm-", dir=scratch_dir) as scratch:
        indices, offsets, lengths = _open_tensors(path, Path(scratch))
        T, B = _checked(path, indices, offsets, lengths)
        tables = tuple(range(T)) if selection.tables is None else tuple(selection.tables)
        for t in tables:
            if not 0 <= t < T:
                raise BatchError("tables", f"{t} is not a table of {str(path)!r}, which has {T} (0 to {T - 1})")
        if not tables:
            raise BatchError("tables", "select at least one table")
        b = B if selection.batch_size is None else selection.batch_size
        k = selection.batch_index
        check_window(b, k, B)
        sizes = [_table_checked(path, t, indices, offsets, lengths) for t in tables]
        # (FBGEMM's slice of each table, then the window's samples: one gather, copied out
        # of the mapped file)
        idx, offs, _ = gather_bags(indices.numpy(), offsets.numpy(), [(B * t + k * b, B * t + (k + 1) * b)
                                                                        for t in tables])
    return Trace(Batch(indices=idx.copy(), offsets=offs, batch_size=b), tuple(sizes))


def write_dlrm_file(path, indices, offsets, lengths):
    """Write (indices, offsets, lengths) in the dlrm_datasets format (gzip, no timestamp, so
    that the same arrays give the same bytes)."""
    torch = _torch()
    data = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (indices, offsets, lengths))
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        torch.save(data, f)


def sample_arrays():
    """The sample's (indices, offsets, lengths): the Meta-calibrated trace of
    :data:`SAMPLE_TRACE`, int64, offsets global and table-major as in Meta's files."""
    from .traces import make_trace
    s = SAMPLE_TRACE
    batch = make_trace("meta", s["batch_size"], s["num_tables"], seed=s["seed"]).batch
    lengths = np.diff(batch.offsets).reshape(s["num_tables"], s["batch_size"])
    return batch.indices, batch.offsets, lengths


def write_sample(path=SAMPLE_PATH):
    """(Re)write the repository's sample file; ``python -m refree.golden.dlrm_data``."""
    write_dlrm_file(path, *sample_arrays())
    return path


if __name__ == "__main__":
    print(f"wrote {write_sample()}")
