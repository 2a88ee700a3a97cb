"""The golden model's binary32 FMA against MPFR (gmpy2), the exact reference."""
import numpy as np
import pytest

from refree.golden.arith import fma, canonical_nan, CANONICAL_NAN_BITS

gmpy2 = pytest.importorskip("gmpy2")
CTX = gmpy2.context(precision=24, emin=-148, emax=128, subnormalize=True)


def mpfr_fma(a, b, c):
    with gmpy2.context(CTX):
        return np.float32(float(gmpy2.fma(gmpy2.mpfr(float(a)), gmpy2.mpfr(float(b)), gmpy2.mpfr(float(c)))))


def biased_operands(rng, n):
    """Random bit patterns with exponents drawn near each other (cancellation, ties) and
    near the subnormal boundary, plus uniform ones."""
    sign = rng.integers(0, 2, n).astype(np.uint32) << 31
    exp = np.where(rng.random(n) < 0.3, rng.integers(0, 4, n), rng.integers(100, 150, n)).astype(np.uint32)
    exp = np.where(rng.random(n) < 0.2, rng.integers(0, 256, n), exp).astype(np.uint32)
    man = rng.integers(0, 1 << 23, n).astype(np.uint32)
    man = np.where(rng.random(n) < 0.2, man & 0x7FF000, man)    # short mantissas: exact ties
    return (sign | (exp << 23) | man).view(np.float32)


def test_fma_matches_mpfr_on_biased_random_triples():
    rng = np.random.default_rng(7)
    n = 20000
    a, b, c = (biased_operands(rng, n) for _ in range(3))
    with np.errstate(all="ignore"):
        c[: n // 2] = (-(a[: n // 2].astype(np.float64) * b[: n // 2])).astype(np.float32) \
            * np.float32(1 + 2 ** -20)                              # near-total cancellation
        got = canonical_nan(fma(a, b, c)).view(np.uint32)
        want = canonical_nan(np.array([mpfr_fma(*t) for t in zip(a, b, c)], np.float32)).view(np.uint32)
    assert np.array_equal(got, want)


def test_fma_special_values():
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    cases = [(inf, 0, 1, nan), (inf, 1, -inf, nan), (-0.0, 1, 0.0, 0.0), (-0.0, 1, -0.0, -0.0),
             (1e-45, 0.5, 0, 0.0), (3e-45, 0.5, 0, 1e-45), (3.4e38, 2, 0, inf), (1, 1, -1, 0.0)]
    for a, b, c, want in cases:
        with np.errstate(all="ignore"):
            got = canonical_nan(fma(np.float32(a), np.float32(b), np.float32(c)))
        assert got.view(np.uint32) == canonical_nan(np.float32(want)).view(np.uint32), (a, b, c)
    assert canonical_nan(np.float32(-np.nan)).view(np.uint32) == CANONICAL_NAN_BITS
