"""numpy model of the P-lane vector unit (:class:`refree.hw.fp.vector.VectorUnit`), bit
for bit, built on the binary32 references of :mod:`.fp_ref`.

A *beat* is a dict with ``op`` (a :class:`VectorOp` value as int), ``last``, ``scalar``
and the lane arrays ``x``, ``y`` (uint32 bit patterns). :func:`run` maps a list of beats to
the list of output beats ``(r, last)`` that the unit produces, and :func:`pack_in` /
:func:`pack_out` give the packed payload integers used by the simulators.
"""

from __future__ import annotations

import numpy as np

from . import fp_ref as R

__all__ = ["COPY", "ADD", "MUL", "FMA", "DIV", "SGD", "ELEMENTWISE",
           "elementwise", "run", "pack_in", "pack_out", "f32_bits", "random_beats"]

COPY, ADD, MUL, FMA, DIV, SGD = range(6)
ELEMENTWISE = (COPY, ADD, MUL, FMA, DIV, SGD)
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


def run(beats):
    """Output beats ``(r lanes, last)`` for a list of input beats."""
    return [(elementwise(b["op"], b["x"], b["y"], b["scalar"]), b["last"]) for b in beats]


def pack_in(beat, lanes: int) -> int:
    """Packed ``VectorUnit.i`` payload: op, last, scalar, x[P], y[P]."""
    w = beat["op"] | (beat["last"] << 3) | (beat["scalar"] << 4)
    pos = 36
    for v in list(beat["x"]) + list(beat["y"]):
        w |= int(v) << pos
        pos += 32
    return w


def pack_out(result, lanes: int) -> int:
    """Packed ``VectorUnit.o`` payload: r[P], last."""
    r, last = result
    w = 0
    for k, v in enumerate(r):
        w |= int(v) << (32 * k)
    return w | (last << (32 * lanes))


def random_beats(seed: int, lanes: int, n_elementwise: int = 200):
    """Element-wise beats: biased binary32 operands, every operation, in runs of one
    operation and single switches."""
    rng = np.random.default_rng(seed)
    beats = []
    # operand pools drawn once (the generators are vectorised), then sliced per beat
    px, py, _ = R.operands("fma", n_elementwise * lanes, int(rng.integers(1 << 30)))
    ps = R.operands("div", n_elementwise, int(rng.integers(1 << 30)))[1]
    k = 0
    while k < n_elementwise:
        op = int(rng.choice(ELEMENTWISE))
        run_len = int(min(n_elementwise - k, rng.choice([1, 1, 2, 5, 40])))
        for j in range(k, k + run_len):
            beats.append({"op": op, "last": int(rng.integers(0, 2)), "scalar": int(ps[j]),
                          "x": px[j * lanes:(j + 1) * lanes], "y": py[j * lanes:(j + 1) * lanes]})
        k += run_len
    return beats
