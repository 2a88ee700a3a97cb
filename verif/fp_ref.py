"""Binary32 references and operand generators for the arithmetic units.

All functions work on IEEE-754 binary32 *bit patterns* (``numpy.uint32`` arrays or Python
ints), because the hardware is compared bit for bit. Every NaN result is the design's
canonical NaN ``0x7FC00000`` (docs/design.md, "Arithmetic contract").

Two kinds of reference:

* **Exact** (:func:`exact`): MPFR through ``gmpy2`` with ``precision=24, emin=-148,
  emax=128, subnormalize=True``, round-to-nearest-even: the binary32 format including its
  subnormals, one correct rounding per operation. Slow (a few microseconds per op).
* **Fast** (:func:`add`, :func:`sub`, :func:`mul`, :func:`div`, :func:`sqrt`,
  :func:`fma`): vectorised numpy. numpy's float32 ``+ - * / sqrt`` are the CPU's IEEE
  operations (correctly rounded, subnormals kept: numpy never sets flush-to-zero), so they
  are exact references. ``fma`` has no float32 numpy form; it is computed exactly as
  ``p = a*b`` in float64 (exact: 48 product bits, exponent far inside float64's range),
  ``s + e = p + c`` exactly by TwoSum, ``s`` turned into the round-to-odd sum (LSB set
  when ``e != 0``, after stepping toward zero when ``e`` points toward zero), then one
  float64 -> float32 conversion. Round-to-odd at 53 bits followed by round-to-nearest at
  24 bits (or fewer, for subnormals) is a single correct rounding, so there is no double
  rounding. ``tests/test_fp_ref.py`` checks every fast reference against :func:`exact`.

Operands:

* :data:`SPECIALS`: the special classes: ±0, ±min subnormal, ±max subnormal, ±min normal,
  ±1, ±max finite, ±inf, and NaNs as inputs (quiet, signalling, negative, with payloads).
* :func:`operands`: a seeded generator biased toward the hard cases per operation
  (aligned exponents, cancellation, rounding ties, the subnormal and overflow boundaries,
  absorbed operands) mixed with uniformly random bit patterns.
* :func:`special_cross`: all special classes crossed with each other.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = [
    "CANONICAL_NAN", "SPECIALS", "SPECIAL_NAMES", "OPS", "ARITY",
    "canon", "as_f32", "add", "sub", "mul", "div", "sqrt", "fma", "fast",
    "exact", "exact_scalar", "special_cross", "operands",
]

CANONICAL_NAN = 0x7FC00000

#: Special-class operands (bit patterns) and their names.
SPECIAL_NAMES = {
    0x00000000: "+0", 0x80000000: "-0",
    0x00000001: "+minsub", 0x80000001: "-minsub",
    0x007FFFFF: "+maxsub", 0x807FFFFF: "-maxsub",
    0x00800000: "+minnorm", 0x80800000: "-minnorm",
    0x3F800000: "+1", 0xBF800000: "-1",
    0x7F7FFFFF: "+max", 0xFF7FFFFF: "-max",
    0x7F800000: "+inf", 0xFF800000: "-inf",
    0x7FC00000: "qnan", 0x7F800001: "snan", 0xFFC12345: "-qnan.payload",
    0x7FBFFFFF: "snan.payload",
}
SPECIALS = np.array(list(SPECIAL_NAMES), dtype=np.uint32)

#: Operations and their number of operands.
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "sqrt": 1, "fma": 3}
OPS = tuple(ARITY)


# --------------------------------------------------------------------------------------
# Fast references (numpy)
# --------------------------------------------------------------------------------------

def _u32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64).astype(np.uint32) if not (
        isinstance(x, np.ndarray) and x.dtype == np.uint32) else x


def as_f32(bits) -> np.ndarray:
    """View bit patterns as float32 values."""
    return _u32(bits).view(np.float32)


def canon(bits) -> np.ndarray:
    """Replace every NaN pattern by :data:`CANONICAL_NAN`."""
    b = _u32(bits).copy()
    nan = (b & 0x7F800000) == 0x7F800000
    nan &= (b & 0x007FFFFF) != 0
    b[nan] = CANONICAL_NAN
    return b


def _f32op(fn, *args) -> np.ndarray:
    with np.errstate(all="ignore"):
        r = fn(*(as_f32(a) for a in args))
    return canon(np.asarray(r, dtype=np.float32).view(np.uint32))


def add(a, b) -> np.ndarray:
    """``fl(a + b)``."""
    return _f32op(np.add, a, b)


def sub(a, b) -> np.ndarray:
    """``fl(a - b)``."""
    return _f32op(np.subtract, a, b)


def mul(a, b) -> np.ndarray:
    """``fl(a * b)``."""
    return _f32op(np.multiply, a, b)


def div(a, b) -> np.ndarray:
    """``fl(a / b)``."""
    return _f32op(np.divide, a, b)


def sqrt(a) -> np.ndarray:
    """``fl(sqrt(a))``."""
    return _f32op(np.sqrt, a)


def fma(a, b, c) -> np.ndarray:
    """``fma(a, b, c)``: ``a*b + c`` with one rounding (TwoSum + round-to-odd, see the
    module docstring)."""
    with np.errstate(all="ignore"):
        A = as_f32(a).astype(np.float64)
        B = as_f32(b).astype(np.float64)
        C = as_f32(c).astype(np.float64)
        p = A * B                       # exact
        s = p + C                       # rounded to 53 bits
        bb = s - p
        e = (p - (s - bb)) + (C - bb)   # p + C == s + e exactly (TwoSum)
        fix = np.isfinite(s) & (e != 0)
        sb = s.view(np.uint64).copy()
        toward_zero = fix & ((e < 0) != (s < 0))
        sb[toward_zero] -= np.uint64(1)  # truncate: one step toward zero
        sb[fix] |= np.uint64(1)          # round to odd: sticky into the last bit
        r = sb.view(np.float64).astype(np.float32)
    return canon(r.view(np.uint32))


_FAST = {"add": add, "sub": sub, "mul": mul, "div": div, "sqrt": sqrt, "fma": fma}


def fast(op: str, *args) -> np.ndarray:
    """Fast reference of ``op`` (one of :data:`OPS`) on bit-pattern arrays."""
    return _FAST[op](*args)


# --------------------------------------------------------------------------------------
# Exact reference (MPFR through gmpy2)
# --------------------------------------------------------------------------------------

_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        import gmpy2
        _CTX = gmpy2.context(precision=24, emin=-148, emax=128, subnormalize=True,
                             round=gmpy2.RoundToNearest)
    return _CTX


def _to_mpfr(bits: int):
    import gmpy2
    return gmpy2.mpfr(float(np.uint32(bits).view(np.float32)), 53)  # exact


def _from_mpfr(x) -> int:
    import gmpy2
    if gmpy2.is_nan(x):
        return CANONICAL_NAN
    return int(np.float32(float(x)).view(np.uint32))  # value is already binary32


def exact_scalar(op: str, *bits: int) -> int:
    """Exact ``op`` on Python-int bit patterns, result as an int bit pattern."""
    ctx = _context()
    x = [_to_mpfr(b) for b in bits]
    if op == "add":
        r = ctx.add(x[0], x[1])
    elif op == "sub":
        r = ctx.sub(x[0], x[1])
    elif op == "mul":
        r = ctx.mul(x[0], x[1])
    elif op == "div":
        r = ctx.div(x[0], x[1])
    elif op == "sqrt":
        r = ctx.sqrt(x[0])
    elif op == "fma":
        r = ctx.fma(x[0], x[1], x[2])
    else:
        raise ValueError(f"Operation must be one of {OPS}, not {op!r}")
    return _from_mpfr(r)


def exact(op: str, *args) -> np.ndarray:
    """Exact reference of ``op`` on bit-pattern arrays (slow: use for samples)."""
    cols = [np.atleast_1d(_u32(a)).tolist() for a in args]
    return np.array([exact_scalar(op, *vals) for vals in zip(*cols)], dtype=np.uint32)


# --------------------------------------------------------------------------------------
# Operands
# --------------------------------------------------------------------------------------

def special_cross(arity: int) -> tuple[np.ndarray, ...]:
    """All :data:`SPECIALS` crossed ``arity`` times (``18**arity`` tuples)."""
    cols = list(zip(*itertools.product(SPECIALS.tolist(), repeat=arity)))
    return tuple(np.array(c, dtype=np.uint32) for c in cols)


def _pack(sign, exp, man) -> np.ndarray:
    sign = np.asarray(sign, dtype=np.uint64) & 1
    exp = np.clip(np.asarray(exp, dtype=np.int64), 0, 255).astype(np.uint64)
    man = np.asarray(man, dtype=np.uint64) & 0x7FFFFF
    return ((sign << 31) | (exp << 23) | man).astype(np.uint32)


def _fields(bits):
    b = _u32(bits).astype(np.int64)
    return b >> 31, (b >> 23) & 0xFF, b & 0x7FFFFF


class _Gen:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def sign(self, n):
        return self.rng.integers(0, 2, n)

    def mant(self, n):
        """Mantissas: uniform, short (trailing zeros: exact results and ties), extreme."""
        r = self.rng
        m = r.integers(0, 1 << 23, n)
        kind = r.integers(0, 4, n)
        short = m & ~((1 << r.integers(1, 24, n)) - 1)
        low = r.integers(0, 8, n)
        high = (1 << 23) - 1 - r.integers(0, 8, n)
        return np.select([kind == 1, kind == 2, kind == 3], [short, low, high], m)

    def finite(self, n, emin=0, emax=254):
        return _pack(self.sign(n), self.rng.integers(emin, emax + 1, n), self.mant(n))

    def uniform(self, n):
        return self.rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)

    def with_exp(self, exp, sign=None):
        n = len(exp)
        return _pack(self.sign(n) if sign is None else sign, exp, self.mant(n))

    def ulps(self, bits, k):
        """Move the magnitude of ``bits`` by ``k`` units in the last place (clamped to
        finite non-negative magnitudes)."""
        b = _u32(bits).astype(np.int64)
        mag = np.clip((b & 0x7FFFFFFF) + k, 0, 0x7F7FFFFF)
        return ((b & 0x80000000) | mag).astype(np.uint32)

    def short_odd(self, n, bits):
        """Mantissas with exactly ``bits`` significant bits, the last one set."""
        m = self.rng.integers(0, 1 << 23, n) | (1 << 22)   # keep it busy
        keep = np.asarray(bits) - 1                          # fraction bits kept
        m = (m >> (23 - keep)) | 1
        return (m << (23 - keep)) & 0x7FFFFF


def _mix(parts, rng, n):
    """Concatenate generator categories, each drawn with an equal share of ``n``."""
    k = len(parts)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    cols = None
    for size, part in zip(sizes, parts):
        got = part(size)
        cols = [list() for _ in got] if cols is None else cols
        for c, g in zip(cols, got):
            c.append(_u32(g))
    cols = [np.concatenate(c) for c in cols]
    perm = rng.permutation(n)
    return tuple(c[perm] for c in cols)


def _pairs_add(g: _Gen, n: int):
    r = g.rng

    def uniform(k):
        return g.uniform(k), g.uniform(k)

    def anyfin(k):
        return g.finite(k), g.finite(k)

    def aligned(k):
        ea = r.integers(0, 255, k)
        return g.with_exp(ea), g.with_exp(np.clip(ea + r.integers(-3, 4, k), 0, 254))

    def cancel(k):
        a = g.finite(k)
        b = g.ulps(a, r.integers(-4, 5, k)) ^ np.uint32(0x80000000)
        return a, b

    def ties(k):
        ea = r.integers(26, 255, k)
        b = _pack(g.sign(k), ea - r.integers(22, 28, k), g.short_odd(k, r.integers(1, 4, k)))
        return g.with_exp(ea), b

    def subnormal(k):
        a = g.with_exp(r.integers(0, 4, k))
        b = np.where(r.integers(0, 2, k) == 1, g.with_exp(r.integers(0, 4, k)),
                     g.ulps(a, r.integers(-300, 300, k)) ^ np.uint32(0x80000000))
        return a, b

    def overflow(k):
        s = g.sign(k)
        return g.with_exp(r.integers(250, 255, k), s), g.with_exp(r.integers(250, 255, k), s)

    def far(k):
        ea = r.integers(0, 255, k)
        eb = np.clip(ea - r.integers(24, 60, k), 0, 254)
        a, b = g.with_exp(ea), g.with_exp(eb)
        swap = r.integers(0, 2, k) == 1
        return np.where(swap, b, a), np.where(swap, a, b)

    return _mix([uniform, anyfin, aligned, cancel, ties, subnormal, overflow, far], r, n)


def _pairs_mul(g: _Gen, n: int):
    r = g.rng

    def uniform(k):
        return g.uniform(k), g.uniform(k)

    def anyfin(k):
        return g.finite(k), g.finite(k)

    def inrange(k):
        ea = r.integers(1, 255, k)
        eb = np.clip(127 + r.integers(-100, 101, k) - ea + 127, 0, 254)
        return g.with_exp(ea), g.with_exp(eb)

    def ties(k):
        ea = r.integers(64, 190, k)
        eb = r.integers(64, 190, k)
        a = _pack(g.sign(k), ea, g.short_odd(k, r.integers(10, 15, k)))
        b = _pack(g.sign(k), eb, g.short_odd(k, r.integers(10, 16, k)))
        return a, b

    def subnormal(k):
        # biased exponent of the product (ea + eb - 127) around the subnormal range
        ep = r.integers(-27, 4, k)
        ea = r.integers(0, 255, k)
        eb = ep + 127 - ea
        ok = (eb >= 0) & (eb <= 254)
        eb = np.where(ok, eb, r.integers(0, 4, k))
        a = np.where(r.integers(0, 2, k) == 1, g.with_exp(ea),
                     _pack(g.sign(k), ea, g.short_odd(k, r.integers(8, 14, k))))
        return a, g.with_exp(eb)

    def subin(k):
        return g.with_exp(np.zeros(k, dtype=np.int64)), g.with_exp(r.integers(100, 255, k))

    def overflow(k):
        ep = r.integers(250, 258, k)
        ea = r.integers(127, 255, k)
        return g.with_exp(ea), g.with_exp(np.clip(ep + 127 - ea, 0, 254))

    return _mix([uniform, anyfin, inrange, ties, subnormal, subin, overflow], r, n)


def _pairs_div(g: _Gen, n: int):
    r = g.rng

    def uniform(k):
        return g.uniform(k), g.uniform(k)

    def anyfin(k):
        return g.finite(k), g.finite(k)

    def exact_q(k):
        b = g.finite(k, 1, 200)
        q = _pack(0, 127 + r.integers(-20, 21, k), g.short_odd(k, r.integers(1, 12, k)))
        return mul(b, q), b

    def near_one(k):
        b = g.finite(k)
        return g.ulps(b, r.integers(-3, 4, k)) ^ (g.sign(k).astype(np.uint32) << 31), b

    def subnormal(k):
        eq = r.integers(-27, 4, k)           # biased exponent of the quotient
        ea = r.integers(0, 255, k)
        eb = np.clip(ea - eq + 127, 0, 254)
        return g.with_exp(ea), g.with_exp(eb)

    def pow2_ties(k):
        # a / 2^j landing in the subnormals: exact midpoints are possible
        ea = r.integers(1, 60, k)
        eb = np.clip(ea + 127 - r.integers(-26, 2, k), 0, 254)
        return g.with_exp(ea), _pack(g.sign(k), eb, 0)

    def overflow(k):
        eq = r.integers(250, 258, k)
        ea = r.integers(127, 255, k)
        return g.with_exp(ea), g.with_exp(np.clip(ea - eq + 127, 0, 254))

    def subin(k):
        a = g.with_exp(r.integers(0, 2, k))
        b = g.with_exp(r.integers(0, 2, k))
        swap = r.integers(0, 3, k)
        return (np.where(swap == 1, g.finite(k), a), np.where(swap == 2, g.finite(k), b))

    return _mix([uniform, anyfin, exact_q, near_one, subnormal, pow2_ties, overflow, subin],
                r, n)


def _singles_sqrt(g: _Gen, n: int):
    r = g.rng

    def uniform(k):
        return (g.uniform(k),)

    def positive(k):
        return (g.finite(k) & np.uint32(0x7FFFFFFF),)

    def squares(k):
        y = _pack(0, r.integers(40, 215, k), g.short_odd(k, r.integers(1, 13, k)))
        return (mul(y, y),)

    def near_squares(k):
        y = _pack(0, r.integers(40, 215, k), g.mant(k))
        return (g.ulps(mul(y, y), r.integers(-2, 3, k)),)

    def subnormal(k):
        return (g.with_exp(r.integers(0, 3, k), np.zeros(k, dtype=np.int64)),)

    return _mix([uniform, positive, squares, near_squares, subnormal], r, n)


def _triples_fma(g: _Gen, n: int):
    r = g.rng

    def uniform(k):
        return g.uniform(k), g.uniform(k), g.uniform(k)

    def anyfin(k):
        return g.finite(k), g.finite(k), g.finite(k)

    def prod(k, lo=-100, hi=101):
        ea = r.integers(1, 255, k)
        eb = np.clip(127 + r.integers(lo, hi, k) - ea + 127, 0, 254)
        a, b = g.with_exp(ea), g.with_exp(eb)
        return a, b, mul(a, b)

    def cancel(k):
        a, b, p = prod(k)
        return a, b, g.ulps(p, r.integers(-3, 4, k)) ^ np.uint32(0x80000000)

    def aligned(k):
        a, b, p = prod(k)
        _, ep, _ = _fields(p)
        return a, b, g.with_exp(np.clip(ep + r.integers(-3, 4, k), 0, 254))

    def sticky(k):
        a, b, p = prod(k)
        _, ep, _ = _fields(p)
        d = r.integers(20, 60, k) * np.where(r.integers(0, 2, k) == 1, 1, -1)
        return a, b, g.with_exp(np.clip(ep + d, 0, 254))

    def ties(k):
        ea = r.integers(64, 190, k)
        eb = r.integers(64, 190, k)
        a = _pack(g.sign(k), ea, g.short_odd(k, r.integers(6, 13, k)))
        b = _pack(g.sign(k), eb, g.short_odd(k, r.integers(6, 13, k)))
        ep = ea + eb - 127
        c = _pack(g.sign(k), np.clip(ep - r.integers(-2, 28, k), 0, 254),
                  g.short_odd(k, r.integers(1, 10, k)))
        return a, b, c

    def subnormal(k):
        a, b, p = prod(k, -150, -100)
        c = np.where(r.integers(0, 2, k) == 1, g.with_exp(r.integers(0, 3, k)),
                     g.ulps(p, r.integers(-3, 4, k)) ^ np.uint32(0x80000000))
        return a, b, c

    def overflow(k):
        a, b, p = prod(k, 120, 131)
        return a, b, g.with_exp(r.integers(245, 255, k))

    def zeros(k):
        a, b, c = g.finite(k), g.finite(k), g.finite(k)
        z = _pack(g.sign(k), 0, 0)
        which = r.integers(0, 3, k)
        return (np.where(which == 0, z, a), np.where(which == 1, z, b),
                np.where(which == 2, z, c))

    return _mix([uniform, anyfin, cancel, aligned, sticky, ties, subnormal, overflow, zeros],
                r, n)


def _pairs_sub(g: _Gen, n: int):
    a, b = _pairs_add(g, n)
    return a, b ^ np.uint32(0x80000000)   # the same hard cases for a - b


_GENERATORS = {"add": _pairs_add, "sub": _pairs_sub, "mul": _pairs_mul, "div": _pairs_div,
               "sqrt": _singles_sqrt, "fma": _triples_fma}


def operands(op: str, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``n`` operand tuples for ``op``, biased toward its hard cases, reproducible from
    ``seed``. Returns one ``uint32`` array per operand."""
    if op not in _GENERATORS:
        raise ValueError(f"Operation must be one of {OPS}, not {op!r}")
    if n < 0:
        raise ValueError(f"Operand count must be a non-negative integer, not {n!r}")
    return _GENERATORS[op](_Gen(seed), n)
