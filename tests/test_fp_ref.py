"""The binary32 references: fast numpy forms against MPFR, and the operand generators."""

import numpy as np
import pytest

from refree.verif import fp_ref as R

pytest.importorskip("gmpy2")


@pytest.mark.parametrize("op", R.OPS)
def test_fast_matches_exact_on_biased_sample(op):
    ops = R.operands(op, 4000, seed=123)
    fast = R.fast(op, *ops)
    exact = R.exact(op, *ops)
    bad = np.nonzero(fast != exact)[0]
    assert bad.size == 0, [(tuple(hex(int(o[i])) for o in ops), hex(int(fast[i])),
                            hex(int(exact[i]))) for i in bad[:5]]


@pytest.mark.parametrize("op", R.OPS)
def test_fast_matches_exact_on_special_cross(op):
    ops = R.special_cross(R.ARITY[op])
    assert np.array_equal(R.fast(op, *ops), R.exact(op, *ops))


def test_known_values():
    one, two, half = 0x3F800000, 0x40000000, 0x3F000000
    assert R.exact_scalar("add", one, one) == two
    assert R.exact_scalar("sub", one, one) == 0x00000000           # +0 under RNE
    assert R.exact_scalar("add", 0x80000000, 0x80000000) == 0x80000000
    assert R.exact_scalar("mul", 0x00000001, half) == 0x00000000    # tie to even: 0
    assert R.exact_scalar("mul", 0x00000003, half) == 0x00000002    # 1.5 -> 2
    assert R.exact_scalar("div", one, 0x00000000) == 0x7F800000
    assert R.exact_scalar("sqrt", 0x80000000) == 0x80000000
    assert R.exact_scalar("sqrt", 0xBF800000) == R.CANONICAL_NAN
    assert R.exact_scalar("fma", 0x7F800000, 0, one) == R.CANONICAL_NAN
    assert R.exact_scalar("add", 0x7F7FFFFF, 0x73000000) == 0x7F800000  # ties-even to inf
    # fma differs from the rounded product-then-sum: (1+2^-23)^2 - (1+2^-22)
    a = 0x3F800001
    assert R.exact_scalar("fma", a, a, 0xBF800002) == 0x28800000       # 2^-46
    assert int(R.fma([a], [a], [0xBF800002])[0]) == 0x28800000


def test_fma_no_double_rounding():
    # a*b is a binary32 midpoint, c a tiny positive number far below float64's precision:
    # a float64 sum rounds back onto the midpoint and then ties to even (down): wrong.
    a = 0x3F800800                 # 1 + 2^-12: a*a = 1 + 2^-11 + 2^-24, a midpoint
    c = 0x17800000                 # 2^-80
    up = 0x3F801001                # 1 + 2^-11 + 2^-23
    assert R.exact_scalar("fma", a, a, c) == up
    assert int(R.fma([a], [a], [c])[0]) == up
    f64 = np.float32(np.float64(R.as_f32([a])[0]) ** 2 + np.float64(R.as_f32([c])[0]))
    assert int(f64.view(np.uint32)) == up - 1          # the naive reference is wrong


def test_canonical_nan():
    bits = np.array([0x7F800001, 0xFFC00000, 0x7FFFFFFF, 0x7F800000, 0x3F800000],
                    dtype=np.uint32)
    assert R.canon(bits).tolist() == [R.CANONICAL_NAN] * 3 + [0x7F800000, 0x3F800000]


def test_special_set_classes():
    s = R.SPECIALS
    assert len(s) == 18 and len(set(s.tolist())) == 18
    exp = (s >> 23) & 0xFF
    man = s & 0x7FFFFF
    assert ((exp == 0) & (man != 0)).sum() == 4           # subnormals
    assert ((exp == 255) & (man != 0)).sum() == 4         # NaNs incl. signalling
    assert len(R.special_cross(3)[0]) == 18 ** 3


@pytest.mark.parametrize("op", R.OPS)
def test_generator_is_seeded_and_biased(op):
    a = R.operands(op, 3000, seed=7)
    b = R.operands(op, 3000, seed=7)
    c = R.operands(op, 3000, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    res = R.fast(op, *a)
    exp = (res >> 23) & 0xFF
    frac = res & 0x7FFFFF
    # The hard regions are reached far more often than by uniform bit patterns.
    if op != "sqrt":
        assert ((exp == 0) & (frac != 0)).mean() > 0.01      # subnormal results
        assert (exp == 255).mean() > 0.001                   # overflow / inf
    # subnormal inputs
    assert any((((x >> 23) & 0xFF) == 0).mean() > 0.02 for x in a)


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Operation must be one of"):
        R.operands("pow", 10)
    with pytest.raises(ValueError, match="non-negative integer"):
        R.operands("add", -1)


def _ties(op, ops, res):
    """Number of results whose exact value lies exactly halfway between two binary32
    numbers (the rounding ties), found with 400-bit arithmetic."""
    import gmpy2
    hi = gmpy2.context(precision=400, emin=-10000, emax=10000)
    f32 = [R.as_f32(o) for o in ops]
    ties = 0
    for i in range(len(res)):
        vals = [gmpy2.mpfr(float(o[i]), 53) for o in f32]
        rb = int(res[i])
        if any(gmpy2.is_nan(x) or gmpy2.is_infinite(x) for x in vals) or \
                (rb & 0x7F800000) == 0x7F800000:
            continue
        v = {"add": lambda: hi.add(*vals), "mul": lambda: hi.mul(*vals),
             "fma": lambda: hi.fma(*vals)}[op]()
        r = gmpy2.mpfr(float(np.uint32(rb).view(np.float32)), 53)
        if v == r:
            continue
        toward = np.float32(np.inf if v > r else -np.inf)
        with np.errstate(all="ignore"):
            n = np.nextafter(np.uint32(rb).view(np.float32), toward, dtype=np.float32)
        if hi.mul(hi.sub(v, r), 2) == hi.sub(gmpy2.mpfr(float(n), 53), r):
            ties += 1
    return ties


@pytest.mark.parametrize("op, min_ties", [("add", 0.02), ("mul", 0.01), ("fma", 0.005)])
def test_generator_reaches_the_hard_results(op, min_ties):
    """The biased operands produce rounding ties, overflow from finite operands,
    subnormal results and zeros from nonzero operands, far more often than uniform bit
    patterns would (ties and exact cancellation are practically never hit by those)."""
    ops = R.operands(op, 5000, seed=31)
    res = R.fast(op, *ops)
    finite = np.all([(o & 0x7F800000) != 0x7F800000 for o in ops], axis=0)
    nonzero = np.all([(o & 0x7FFFFFFF) != 0 for o in ops[:2]], axis=0)
    mag = res & 0x7FFFFFFF
    assert np.mean(finite & (mag == 0x7F800000)) > 0.01            # overflow to inf
    assert np.mean((mag != 0) & (mag < 0x00800000)) > 0.02         # subnormal results
    assert np.mean(finite & nonzero & (mag == 0)) > 0.005          # underflow/cancellation
    assert _ties(op, ops, res) / len(res) > min_ties


def test_uniform_bits_rarely_tie():
    # the contrast that motivates the bias: uniformly random pairs almost never tie
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32)
    assert _ties("mul", (a, b), R.mul(a, b)) / 3000 < 0.005
