"""The loader of Meta's dlrm_datasets files (golden/dlrm_data.py) and the commands that take
them: the repository's sample, table selection and windows against FBGEMM's slicing, dtypes,
damaged files, and the command line (analyze, step, convert)."""
import gzip
import json
import re

import numpy as np
import pytest
import torch

from refree.gen.cli import main
from refree.golden.batch import load_batch
from refree.golden.dlrm_data import (SAMPLE_PATH, SAMPLE_TRACE, DlrmSelection, load_dlrm, write_dlrm_file,
                                     write_sample)
from refree.golden.errors import BatchError
from refree.golden.traces import make_trace


def small_file(path, T=3, B=10, dtypes=(np.int64, np.int64), seed=0):
    """A file in the format with random bags (some empty); returns its arrays."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, size=(T, B))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([rng.integers(0, 50 + 10 * t, lengths[t].sum()) for t in range(T)])
    idx_t, offs_t = dtypes
    write_dlrm_file(path, indices.astype(idx_t), offsets.astype(offs_t), lengths.astype(np.int64))
    return indices, offsets, lengths


def fbgemm_slice(indices, offsets, B, tables, b, k):
    """FBGEMM's generate_requests_from_data_file selection (tables in the order given), then a
    window of b samples, the k-th, written as plain loops."""
    out_idx, out_offs = [], [0]
    for t in tables:
        for s in range(k * b, (k + 1) * b):
            lo, hi = offsets[B * t + s], offsets[B * t + s + 1]
            out_idx.extend(indices[lo:hi])
            out_offs.append(out_offs[-1] + hi - lo)
    return np.array(out_idx, np.int64), np.array(out_offs, np.int64)


def test_the_sample_is_the_meta_trace_it_was_made_from(tmp_path):
    again = write_sample(tmp_path / "sample.pt.gz")
    assert again.read_bytes() == SAMPLE_PATH.read_bytes()      # (the same bytes: gzip without a timestamp)
    with gzip.open(SAMPLE_PATH) as f:                          # the format, read as Meta's README reads it
        indices, offsets, lengths = torch.load(f)
    s = SAMPLE_TRACE
    assert tuple(lengths.shape) == (s["num_tables"], s["batch_size"]) and len(offsets) == lengths.numel() + 1
    want = make_trace("meta", s["batch_size"], s["num_tables"], seed=s["seed"]).batch
    got = load_dlrm(SAMPLE_PATH)
    assert np.array_equal(got.batch.indices, want.indices) and np.array_equal(got.batch.offsets, want.offsets)
    assert np.array_equal(got.batch.indices, indices.numpy())
    assert got.batch.batch_size == s["batch_size"] and got.batch.num_tables == s["num_tables"]


@pytest.mark.parametrize("dtypes", [(np.int64, np.int64), (np.int32, np.int32), (np.int32, np.int64)],
                         ids=["int64", "int32", "mixed"])
def test_tables_and_windows_are_fbgemms_slices(tmp_path, dtypes):
    path = tmp_path / "t.pt.gz"
    indices, offsets, lengths = small_file(path, dtypes=dtypes)
    T, B = lengths.shape
    rows = [int(indices[offsets[B * t]:offsets[B * (t + 1)]].max(initial=-1)) + 1 for t in range(T)]
    for tables, b, k in [(None, None, 0), ((2, 0), None, 0), ((1,), 5, 1), ((0, 2, 1), 2, 3), ((2, 2), 10, 0)]:
        tr = load_dlrm(path, DlrmSelection(tables, b, k))
        sel = tuple(range(T)) if tables is None else tables
        want_idx, want_offs = fbgemm_slice(indices, offsets, B, sel, b or B, k)
        assert np.array_equal(tr.batch.indices, want_idx) and np.array_equal(tr.batch.offsets, want_offs)
        assert tr.batch.batch_size == (b or B) and tr.num_rows == tuple(max(rows[t], 1) for t in sel)
        assert (tr.batch.indices_int32, tr.batch.offsets_int32) == (dtypes[0] == np.int32, dtypes[1] == np.int32)


def test_a_file_in_torchs_legacy_format_is_read_whole(tmp_path):
    indices, offsets, lengths = small_file(tmp_path / "new.pt.gz")
    legacy = tmp_path / "legacy.pt"
    torch.save(tuple(torch.from_numpy(a) for a in (indices, offsets, lengths)), legacy,
               _use_new_zipfile_serialization=False)
    got, want = load_dlrm(legacy), load_dlrm(tmp_path / "new.pt.gz")
    assert np.array_equal(got.batch.indices, want.batch.indices) and got.num_rows == want.num_rows


def _save(path, data):
    with gzip.open(path, "wb") as f:
        torch.save(data, f)


def _arrays(lengths=((2, 1), (0, 3)), indices=None, offsets=None, dtype=torch.int64):
    lengths = torch.tensor(lengths, dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.reshape(-1).cumsum(0)]) if offsets is None \
        else torch.tensor(offsets)
    indices = torch.arange(int(offsets[-1]), dtype=dtype) if indices is None else torch.tensor(indices)
    return indices, offsets, lengths


DAMAGED = [
    ("not gzip", lambda p: p.write_bytes(b"indices, offsets, lengths"), "not a dlrm_datasets file"),
    ("gzip of text", lambda p: p.write_bytes(gzip.compress(b"hello")), "not a dlrm_datasets file"),
    ("cut short", lambda p: (_save(p, _arrays()), p.write_bytes(p.read_bytes()[:60])), "not a dlrm_datasets file"),
    ("two tensors", lambda p: _save(p, _arrays()[:2]), "three tensors"),
    ("a dict", lambda p: _save(p, {"indices": _arrays()[0]}), "three tensors"),
    ("float indices", lambda p: _save(p, (_arrays()[0].float(), *_arrays()[1:])), "int32 or int64"),
    ("lengths 1-D", lambda p: _save(p, (*_arrays()[:2], _arrays()[2].reshape(-1))), "lengths [T, B]"),
    ("too few offsets", lambda p: _save(p, _arrays(offsets=[0, 2, 3, 3])), "T*B+1"),
    ("offsets past the indices", lambda p: _save(p, _arrays(indices=[0, 1, 2])), "len(indices)"),
    ("lengths against offsets", lambda p: _save(p, (_arrays()[0], _arrays()[1], torch.tensor([[1, 2], [0, 3]]))),
     "bag 0 (table 0, sample 0) has 2"),
    ("a negative index", lambda p: _save(p, _arrays(indices=[0, -4, 1, 2, 3, 4])), "negative"),
    ("bfloat16 indices", lambda p: _save(p, (_arrays()[0].bfloat16(), *_arrays()[1:])), "dense int32 or int64"),
    ("sparse offsets", lambda p: _save(p, (_arrays()[0], _arrays()[1].to_sparse(), _arrays()[2])),
     "dense int32 or int64"),
]


@pytest.mark.parametrize("name,damage,message", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_files_are_refused_by_name(tmp_path, capsys, name, damage, message):
    path = tmp_path / "bad.pt.gz"
    damage(path)
    with pytest.raises(BatchError, match=re.escape(message)):
        load_dlrm(path)
    assert main(["analyze", str(path)]) == 2
    assert capsys.readouterr().err.startswith("refree: error: ")


@pytest.mark.parametrize("selection,message", [
    (DlrmSelection((3,)), "3 is not a table"), (DlrmSelection(()), "at least one table"),
    (DlrmSelection(None, 3, 1), "does not fit"), (DlrmSelection(None, 0), "does not fit")])
def test_selections_outside_the_file_are_refused(tmp_path, selection, message):
    small_file(tmp_path / "t.pt.gz", B=4)
    with pytest.raises(BatchError, match=message):
        load_dlrm(tmp_path / "t.pt.gz", selection)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(BatchError, match="no such file"):
        load_dlrm(tmp_path / "missing.pt.gz")


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_commands_take_the_file_as_its_converted_batch(tmp_path, capsys):
    """analyze and step on a selection of the file give what they give on the batch file that
    convert writes of the same selection (which keeps the file's dtypes)."""
    path = tmp_path / "t.pt.gz"
    small_file(path, T=3, B=12, dtypes=(np.int32, np.int64))
    pick = ["--select-tables", "2,0", "--batch-size", "6", "--batch-index", "1"]
    code, out, _ = run(["convert", path, tmp_path / "b.npz", *pick], capsys)
    assert code == 0 and json.loads(out)["indices"] == "int32" and json.loads(out)["tables"] == 2
    converted = load_batch(tmp_path / "b.npz")
    assert converted.indices_int32 and not converted.offsets_int32
    reports = [run(["analyze", src, "--json", *opts], capsys) for src, opts in
               ((path, pick), (tmp_path / "b.npz", []))]
    assert reports[0][0] == reports[1][0] == 0 and json.loads(reports[0][1])["total"] == json.loads(reports[1][1])["total"]
    rows = json.loads(run(["convert", path, tmp_path / "b.npz", *pick], capsys)[1])["rows"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tables.npz", **{f"table_{t}": rng.standard_normal((r, 8)).astype(np.float32)
                                         for t, r in enumerate(rows)})
    np.save(tmp_path / "grad.npy", rng.standard_normal((6, 16)).astype(np.float32))
    outs = []
    for src, opts in ((path, pick), (tmp_path / "b.npz", [])):
        code, _, err = run(["step", src, *opts, "--table", tmp_path / "tables.npz", "--grad", tmp_path / "grad.npy",
                            "--lr", "0.1", "--out", tmp_path / f"out{len(outs)}"], capsys)
        assert code == 0, err
        outs.append((tmp_path / f"out{len(outs)}" / "pooled.npy").read_bytes())
    assert outs[0] == outs[1]
    for option in (["--select-tables", "1"], ["--batch-index", "1"], ["--index-dtype", "int32"]):
        with pytest.raises(SystemExit):     # (usage errors: for dlrm_datasets files or traces)
            main(["analyze", str(tmp_path / "b.npz"), *option])
    code, _, err = run(["convert", path, tmp_path / "b.txt"], capsys)
    assert code == 2 and "must end in .npz" in err
    code, _, err = run(["convert", path, tmp_path / "missing" / "b.npz"], capsys)
    assert code == 2 and "no writable folder" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b.")) == ["b.npz"]    # no leftovers
