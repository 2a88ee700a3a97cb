"""Pipelined binary32 square root (restoring digit recurrence, fully unrolled)."""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import (NORMALISE_STAGES, Pipeline, Unary, Unpacked,
                     check_pipeline, lzc, normalise_round)

__all__ = ["SquareRoot"]

#: Root bits computed: at least 25 significant (24 and a guard bit).
ROOT_BITS = 26


class SquareRoot(wiring.Component):
    """Binary32 ``sqrt(a)``, correctly rounded (round to nearest even).

    The significand is normalised (subnormals too) and, for an odd exponent, doubled; the
    integer square root ``Q = isqrt(M)`` of ``M = m << 26`` comes from a restoring
    radix-2 recurrence (two radicand bits per root bit), 26 root bits in
    ``[2**24.5, 2**25.5)``, and a nonzero remainder is the sticky bit. A square root is
    never subnormal and never overflows. ``sqrt(-0) = -0``, ``sqrt(+inf) = +inf``;
    negative numbers, ``-inf`` and NaN give ``0x7FC00000``.

    Parameters
    ----------
    iterations_per_stage : int
        Root bits per pipeline stage, 1 to 26 (default 1).
    pipeline : iterable of str, optional
        Register points to enable, out of :attr:`stages` (default: all).

    Attributes
    ----------
    latency : int
        ``2 + ceil(26 / iterations_per_stage) + 6`` with every point enabled (34 by
        default).
    stages : tuple of str
        The register points: ``"unpack"``, ``"prenorm"``, ``"root0"`` ... and the back
        end's.

    Members
    -------
    i : In(stream.Signature(Unary))
        Operand ``a``.
    o : Out(stream.Signature(32))
        Result bit pattern.

    Initiation interval 1; a stalled output holds the pipeline; reset empties it.
    """

    def __init__(self, iterations_per_stage=1, pipeline=None):
        if not isinstance(iterations_per_stage, int) or not 1 <= iterations_per_stage <= 26:
            raise ValueError(f"Iterations per stage must be an integer from 1 to 26, not "
                             f"{iterations_per_stage!r}")
        self.iterations_per_stage = iterations_per_stage
        n = -(-ROOT_BITS // iterations_per_stage)
        self.stages = (("unpack", "prenorm") + tuple(f"root{k}" for k in range(n)) +
                       NORMALISE_STAGES)
        self._enabled = check_pipeline("SquareRoot", self.stages, self.stages, pipeline)
        self.latency = len(self._enabled)
        super().__init__({"i": In(stream.Signature(Unary)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        p = Pipeline(m, self.stages, self._enabled, en, self.i.valid)

        # ---- "unpack", "prenorm" ----------------------------------------------------------
        a = Unpacked(m, self.i.payload.a, "a")
        nan = a.is_nan | (a.sign & ~a.is_zero)
        v = p.stage("unpack", mant=a.mant, lz=lzc(m, a.mant, "lza"), e=a.e + 126,
                    nan=nan, inf=a.is_inf, zero=a.is_zero, sign=a.sign)  # +inf, +-0 stay
        mant = (v["mant"] << v["lz"])[:24]
        # a = mant * 2**(ea - 150) with ea = e - lz; 150 is even, so ea's parity decides
        # sqrt(a) = isqrt(radicand << 26) * 2**((ea - 150 - odd)/2 - 13)
        #         = Q / 2**25 * 2**(em1 + 1 - 127) with em1 = (ea - odd)/2 + 63
        #         = floor((ea + 126) / 2)
        e126 = v["e"] - v["lz"]
        odd = e126[0]
        radicand = Mux(odd, Cat(C(0, 1), mant), Cat(mant, C(0, 1)))     # 25 bits
        v = p.stage("prenorm", m=radicand, em1=e126 >> 1, nan=v["nan"], inf=v["inf"],
                    zero=v["zero"], sign=v["sign"])

        # ---- the recurrence: two radicand bits per root bit ------------------------------
        carry = ("em1", "nan", "inf", "zero", "sign")
        rest = v["m"]                      # radicand bits not yet consumed (MSB first)
        r, q = C(0, 1), C(0, 1)
        done = 0
        # M = radicand << 26 is 51 bits; read as 26 pairs from bit 51 down (the top bit 0).
        pairs = 26
        for name in self.stages[2:-len(NORMALISE_STAGES)]:
            for _ in range(min(self.iterations_per_stage, ROOT_BITS - done)):
                top = 51 - 2 * done                 # this pair is M[top-1:top+1]
                lo, hi = top - 1 - 26, top - 26     # the same bits in the radicand
                bit_hi = rest[hi] if 0 <= hi < 25 else C(0, 1)
                bit_lo = rest[lo] if 0 <= lo < 25 else C(0, 1)
                acc = Cat(bit_lo, bit_hi, r)
                trial = Cat(C(1, 1), C(0, 1), q)
                diff = acc - trial
                ge = ~diff[-1]
                r = p.wire(f"r{done}", Mux(ge, diff, acc)[:28])
                q = p.wire(f"q{done}", Cat(ge, q)[:26] if done else ge)
                done += 1
            v = p.stage(name, m=rest, r=r, q=q, **{x: v[x] for x in carry})
            rest, r, q = v["m"], v["r"], v["q"]
        assert done == pairs

        result = normalise_round(p, x=q, em1=v["em1"], sign=C(0, 1), zero_sign=C(0, 1),
                                 sticky=r.any(), nan=v["nan"], inf=v["inf"], zero=v["zero"],
                                 special_sign=v["sign"], max_left=1, underflow=False)
        m.d.comb += [self.o.valid.eq(p.finish()), self.o.payload.eq(result)]
        return m
