"""Test cases for the binary32 units: which component computes which operation, how its
operand payload is packed, and operand sets with their expected results.

Shared by the Amaranth-simulator tests, the cocotb tests and the benchmark, so all three
exercise the units the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import fp_ref as R

__all__ = ["UnitCase", "UNITS", "Vectors", "vectors"]


@dataclass(frozen=True)
class UnitCase:
    """One arithmetic unit under test.

    ``fields`` are the payload fields in packing order (first field in the low bits);
    ``op`` names the reference in :mod:`.fp_ref`.
    """
    name: str
    module: str
    cls_name: str
    op: str
    fields: tuple

    @property
    def cls(self):
        import importlib
        return getattr(importlib.import_module(self.module), self.cls_name)


UNITS = {
    "add": UnitCase("fp_add", "refree.hw.fp.adder", "Adder", "add", ("a", "b", "sub")),
    "mul": UnitCase("fp_mul", "refree.hw.fp.multiplier", "Multiplier", "mul", ("a", "b")),
    "fma": UnitCase("fp_fma", "refree.hw.fp.fma", "FusedMultiplyAdd", "fma", ("a", "b", "c")),
    "div": UnitCase("fp_div", "refree.hw.fp.divider", "Divider", "div", ("a", "b")),
    "sqrt": UnitCase("fp_sqrt", "refree.hw.fp.sqrt", "SquareRoot", "sqrt", ("a",)),
}


@dataclass
class Vectors:
    """Operand columns (one per payload field), expected results, and helpers."""
    unit: UnitCase
    columns: dict
    expected: np.ndarray

    def __len__(self):
        return len(self.expected)

    def words(self) -> list[int]:
        """Packed payload words (``a`` in bits 0-31, ``b`` in 32-63, then ``c``/``sub``)."""
        cols = [self.columns[f].astype(object) for f in self.unit.fields]
        out = cols[0]
        for k, c in enumerate(cols[1:], 1):
            out = out + (c << (32 * k))
        return [int(w) for w in out]

    def describe(self, i: int) -> str:
        ops = ", ".join(f"{f}={int(self.columns[f][i]):#010x}" for f in self.unit.fields)
        names = [R.SPECIAL_NAMES.get(int(self.columns[f][i])) for f in self.unit.fields
                 if f != "sub"]
        extra = f" ({', '.join(n or '.' for n in names)})" if any(names) else ""
        return f"{self.unit.op}({ops}){extra} expected {int(self.expected[i]):#010x}"

    def __add__(self, other: "Vectors") -> "Vectors":
        assert self.unit == other.unit
        cols = {f: np.concatenate([self.columns[f], other.columns[f]]) for f in self.columns}
        return Vectors(self.unit, cols, np.concatenate([self.expected, other.expected]))


def vectors(unit: str | UnitCase, n: int = 0, seed: int = 0, specials: bool = True,
            special_c=None) -> Vectors:
    """Operands and expected results for ``unit``: all special classes crossed (if
    ``specials``; ``special_c`` restricts the FMA's third operand to a subset) followed by
    ``n`` biased random operations from ``seed``. The adder gets the special cross twice
    (``sub`` = 0 and 1) and random ``sub`` bits for the random part, whose ``b`` is
    pre-negated where ``sub`` is set, so the hard cases stay hard."""
    u = UNITS[unit] if isinstance(unit, str) else unit
    arity = R.ARITY[u.op]
    parts = []
    if specials:
        if u.op == "fma" and special_c is not None:
            ab = R.special_cross(2)
            cs = np.asarray(special_c, dtype=np.uint32)
            parts.append((np.repeat(ab[0], len(cs)), np.repeat(ab[1], len(cs)),
                          np.tile(cs, len(ab[0]))))
        else:
            parts.append(R.special_cross(arity))
    if n:
        parts.append(R.operands(u.op, n, seed))
    ops = [np.concatenate([p[k] for p in parts]) for k in range(arity)]
    cols = dict(zip(("a", "b", "c")[:arity], ops))
    if u.op == "add":
        m = len(parts[0][0]) if specials else 0
        rng = np.random.default_rng(seed + 0x5EB)
        sub = rng.integers(0, 2, len(ops[0]) - m).astype(np.uint32)
        a = np.concatenate([ops[0][:m], ops[0][:m], ops[0][m:]])
        b = np.concatenate([ops[1][:m], ops[1][:m],
                            np.where(sub == 1, ops[1][m:] ^ np.uint32(0x80000000), ops[1][m:])])
        sub = np.concatenate([np.zeros(m, np.uint32), np.ones(m, np.uint32), sub])
        cols = {"a": a, "b": b.astype(np.uint32), "sub": sub}
        expected = R.add(a, b ^ (sub << np.uint32(31)))
    else:
        expected = R.fast(u.op, *ops)
    return Vectors(u, cols, expected)
