"""Binary32 arithmetic of the design's contract, vectorised over numpy arrays.

numpy's float32 add, multiply, divide and sqrt are correctly rounded (RNE, subnormals
kept), so they are used as they are.  numpy has no fused multiply-add; `fma` below
computes one exactly: the float64 product of two binary32 values is exact, the float64
sum is made round-to-odd with an exact TwoSum correction, and round-to-odd at 53 bits
followed by RNE to 24 bits (or fewer, for subnormals) is a correct single rounding because
53 >= 24 + 2.
"""
import numpy as np

__all__ = ["f32", "fma", "canonical_nan", "bits", "CANONICAL_NAN_BITS"]

CANONICAL_NAN_BITS = 0x7FC00000


def f32(x):
    """Round a Python or numpy value once to binary32."""
    return np.float32(x)


def bits(x):
    """The uint32 bit patterns of a float32 array."""
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def canonical_nan(x):
    """Every NaN becomes 0x7FC00000, as the hardware produces it (returns a new array)."""
    x = np.array(x, dtype=np.float32, copy=True)
    x[np.isnan(x)] = np.uint32(CANONICAL_NAN_BITS).view(np.float32)
    return x


def fma(a, b, c):
    """fl(a*b + c) with one rounding, elementwise on float32 operands (broadcasting)."""
    a = np.asarray(a, dtype=np.float32).astype(np.float64)
    b = np.asarray(b, dtype=np.float32).astype(np.float64)
    c = np.asarray(c, dtype=np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        p = a * b                       # exact: 48 significant bits, exponent in range
        s = p + c
        # TwoSum: err is the exact rounding error of s (finite operands only).
        bb = s - p
        err = (p - (s - bb)) + (c - bb)
        inexact = np.isfinite(s) & (err != 0)
        even = (s.view(np.uint64) & 1) == 0
        bump = inexact & even           # round-to-odd: move an even result toward err
        if bump.any():
            s = np.where(bump, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)
