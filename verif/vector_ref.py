"""numpy model of the P-lane vector unit (:class:`refree.hw.fp.vector.VectorUnit`), bit
for bit, built on the binary32 references of :mod:`.fp_ref`.

A *beat* is a dict with ``op`` (a :class:`VectorOp` value as int), ``last``, ``scalar``,
``eps``, ``state`` and the lane arrays ``x``, ``y`` (uint32 bit patterns). :func:`run`
maps a list of beats to the list of output beats ``(r, state, last)`` that the unit
produces, and :func:`pack_in` / :func:`pack_out` give the packed payload integers used by
the simulators.
"""

from __future__ import annotations

import numpy as np

from . import fp_ref as R

__all__ = ["COPY", "ADD", "MUL", "FMA", "DIV", "SGD", "ADAGRAD", "ELEMENTWISE",
           "elementwise", "adagrad_row", "run", "pack_in", "pack_out", "f32_bits",
           "random_beats"]

COPY, ADD, MUL, FMA, DIV, SGD, ADAGRAD = range(7)
ELEMENTWISE = (COPY, ADD, MUL, FMA, DIV, SGD)
ONE = np.uint32(0x3F800000)
SIGN = np.uint32(0x80000000)


def f32_bits(value) -> int:
    return int(np.float32(value).view(np.uint32))


def elementwise(op: int, x, y, s: int) -> np.ndarray:
    """One element-wise beat: the result lanes."""
    x = np.asarray(x, dtype=np.uint32)
    y = np.asarray(y, dtype=np.uint32)
    sv = np.full_like(x, s)
    if op == COPY:
        return x.copy()
    if op == ADD:
        return R.add(x, y)
    if op == MUL:
        return R.mul(sv, x)
    if op == FMA:
        return R.fma(sv, x, y)
    if op == DIV:
        return R.div(x, sv)
    if op == SGD:
        return R.fma(sv ^ SIGN, x, y)
    raise ValueError(f"not an element-wise operation: {op!r}")


def adagrad_row(g, E, lr: int, eps: int, state: int, length: int):
    """Row-wise Adagrad of docs/design.md section 2 on one row; returns ``(E', state')``.

    ``g`` and ``E`` may be longer than ``length`` (padding lanes of the last beat): the
    reduction uses the first ``length`` elements, the update applies to all of them, as
    the hardware does."""
    g = np.asarray(g, dtype=np.uint32)
    E = np.asarray(E, dtype=np.uint32)
    s = np.zeros(8, dtype=np.uint32)                       # eight chains from +0
    for k in range(0, length, 8):
        chunk = g[k:min(k + 8, length)]
        s[:len(chunk)] = R.fma(chunk, chunk, s[:len(chunk)])
    t = R.add(s[0::2], s[1::2])                            # (s0+s1), (s2+s3), ...
    u = R.add(t[0::2], t[1::2])
    total = R.add(u[:1], u[1:])
    q = R.div(total, np.array([f32_bits(length)], dtype=np.uint32))
    new_state = R.add(np.array([state], dtype=np.uint32), q)
    den = R.add(R.sqrt(new_state), np.array([eps], dtype=np.uint32))
    m = R.div(np.array([lr], dtype=np.uint32), den)
    neg_m = np.full_like(g, int(m[0]) ^ 0x80000000)
    return R.fma(neg_m, g, E), int(new_state[0])


def run(beats, lanes: int, length: int):
    """Output beats ``(r lanes, state, last)`` for a list of input beats."""
    out = []
    k = 0
    nbeats = -(-length // lanes)
    while k < len(beats):
        b = beats[k]
        if b["op"] != ADAGRAD:
            out.append((elementwise(b["op"], b["x"], b["y"], b["scalar"]), 0, b["last"]))
            k += 1
            continue
        row = beats[k:k + nbeats]
        if len(row) != nbeats:
            raise ValueError(f"an ADAGRAD row needs {nbeats} beats, got {len(row)}")
        g = np.concatenate([r["x"] for r in row])
        E = np.concatenate([r["y"] for r in row])
        new_E, state = adagrad_row(g, E, b["scalar"], b["eps"], b["state"], length)
        for j in range(nbeats):
            out.append((new_E[j * lanes:(j + 1) * lanes], state, int(j == nbeats - 1)))
        k += nbeats
    return out


def pack_in(beat, lanes: int) -> int:
    """Packed ``VectorUnit.i`` payload: op, last, scalar, eps, state, x[P], y[P]."""
    w = beat["op"] | (beat["last"] << 3) | (beat["scalar"] << 4) | (beat["eps"] << 36)
    w |= beat["state"] << 68
    pos = 100
    for v in list(beat["x"]) + list(beat["y"]):
        w |= int(v) << pos
        pos += 32
    return w


def pack_out(result, lanes: int) -> int:
    """Packed ``VectorUnit.o`` payload: r[P], state, last."""
    r, state, last = result
    w = 0
    for k, v in enumerate(r):
        w |= int(v) << (32 * k)
    return w | (state << (32 * lanes)) | (last << (32 * lanes + 32))


def _row_values(rng, n, kind):
    """Row contents: realistic gradients/weights, or hard binary32 cases."""
    if kind == "normal":
        return rng.normal(0, 1, n).astype(np.float32).view(np.uint32)
    if kind == "small":
        return (rng.normal(0, 1, n) * 1e-20).astype(np.float32).view(np.uint32)
    if kind == "zero":
        return np.where(rng.integers(0, 2, n) == 1, SIGN, np.uint32(0)).astype(np.uint32)
    return R.operands("fma", n, int(rng.integers(1 << 30)))[0]     # anything, NaN included


def random_beats(seed: int, lanes: int, length: int, n_elementwise: int = 200,
                 n_rows: int = 4):
    """A shuffled mix of element-wise beats (biased binary32 operands, every operation,
    runs of one operation and single switches) and ADAGRAD rows (realistic and hard
    values, zero gradients, the first row from state 0)."""
    rng = np.random.default_rng(seed)
    nbeats = -(-length // lanes)
    groups = []
    # operand pools drawn once (the generators are vectorised), then sliced per beat
    px, py, _ = R.operands("fma", n_elementwise * lanes, int(rng.integers(1 << 30)))
    ps = R.operands("div", n_elementwise, int(rng.integers(1 << 30)))[1]
    k = 0
    while k < n_elementwise:
        op = int(rng.choice(ELEMENTWISE))
        run_len = int(min(n_elementwise - k, rng.choice([1, 1, 2, 5, 40])))
        beats = []
        for j in range(k, k + run_len):
            beats.append({"op": op, "last": int(rng.integers(0, 2)), "scalar": int(ps[j]),
                          "eps": 0, "state": 0,
                          "x": px[j * lanes:(j + 1) * lanes], "y": py[j * lanes:(j + 1) * lanes]})
        groups.append(beats)
        k += run_len
    kinds = ["normal", "zero", "small", "hard"]
    for r in range(n_rows):
        kind = kinds[r % len(kinds)] if r else "normal"
        g = _row_values(rng, nbeats * lanes, kind)
        E = _row_values(rng, nbeats * lanes, "normal" if kind != "hard" else "hard")
        lr = f32_bits(rng.choice([0.01, 0.1, 1e-3]))
        eps = f32_bits(1e-8)
        state = 0 if r == 0 else f32_bits(abs(rng.normal(0, 1)))
        beats = []
        for j in range(nbeats):
            beats.append({"op": ADAGRAD, "last": int(j == nbeats - 1), "scalar": lr,
                          "eps": eps, "state": state,
                          "x": g[j * lanes:(j + 1) * lanes], "y": E[j * lanes:(j + 1) * lanes]})
        groups.append(beats)
    order = rng.permutation(len(groups))
    return [b for i in order for b in groups[i]]
