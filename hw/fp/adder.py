"""Pipelined binary32 adder/subtractor."""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import (AddSub, NORMALISE_STAGES, Pipeline, Unpacked,
                     check_pipeline, ge_const, mask_below, normalise_round, or_groups, wire)

__all__ = ["Adder"]


class Adder(wiring.Component):
    """Binary32 ``a + b`` or ``a - b``, correctly rounded (round to nearest even).

    Single path: order the operands by exponent, align the smaller significand with
    guard, round and sticky bits, add or subtract (both ways when the exponents are equal,
    keeping the non-negative difference), then the shared normalise-round-pack back end
    (leading-zero count for cancellation).
    Subnormal inputs and outputs are exact; an exact zero sum is +0 unless both addends
    are -0; ``inf - inf`` and any NaN input give ``0x7FC00000``.

    Parameters
    ----------
    pipeline : iterable of str, optional
        Register points to enable, out of :attr:`STAGES` (default
        :attr:`DEFAULT_PIPELINE`).

    Attributes
    ----------
    latency : int
        Cycles from an accepted operation to its result (the number of enabled register
        points; 8 by default).

    Members
    -------
    i : In(stream.Signature(AddSub))
        Operands ``a``, ``b`` and ``sub`` (1: compute ``a - b``).
    o : Out(stream.Signature(32))
        Result bit pattern.

    Throughput is one operation per cycle; a stalled output holds the whole pipeline
    (see :mod:`refree.hw.fp.common`). Reset empties the pipeline.
    """

    STAGES = ("unpack", "align", "add") + NORMALISE_STAGES
    DEFAULT_PIPELINE = ("unpack", "align", "add", "norm", "lzc", "shift2", "sticky", "round")

    def __init__(self, pipeline=None):
        self._enabled = check_pipeline("Adder", self.STAGES, self.DEFAULT_PIPELINE, pipeline)
        self.latency = len(self._enabled)
        super().__init__({"i": In(stream.Signature(AddSub)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        p = Pipeline(m, self.STAGES, self._enabled, en, self.i.valid)

        # ---- "unpack": classify, order by exponent ------------------------------------
        a_bits = self.i.payload.a
        b_bits = Cat(self.i.payload.b[:31], self.i.payload.b[31] ^ self.i.payload.sub)
        a, b = Unpacked(m, a_bits, "a"), Unpacked(m, b_bits, "b")
        d_ab = wire(m, "d_ab", a.e - b.e)      # both differences at once; the sign of
        d_ba = b.e - a.e                       # one of them says which operand is "big"
        swap = d_ab[-1]
        nan = a.is_nan | b.is_nan | (a.is_inf & b.is_inf & (a.sign ^ b.sign))
        inf = a.is_inf | b.is_inf
        v = p.stage("unpack", m_big=Mux(swap, b.mant, a.mant),
                    m_small=Mux(swap, a.mant, b.mant), e_big=Mux(swap, b.e, a.e),
                    d=Mux(swap, d_ba, d_ab)[:8], sign_big=Mux(swap, b.sign, a.sign),
                    sign_small=Mux(swap, a.sign, b.sign), subtract=a.sign ^ b.sign,
                    zero_sign=a.sign & b.sign, nan=nan, inf=inf,
                    inf_sign=Mux(a.is_inf, a.sign, b.sign))

        # ---- "align": shift the smaller significand, keep G, R and sticky -------------
        d = v["d"]
        far = d[5:].any() | ge_const(d[:5], 27)           # everything goes to sticky
        small = Cat(C(0, 3), v["m_small"])                 # 27 bits: G, R, S below
        aligned = Mux(far, 0, (small >> d[:5])[:27])
        lost = or_groups(small & Mux(far, C((1 << 27) - 1, 27), mask_below(d[:5], 27)), 8)
        v = p.stage("align", m_big=v["m_big"], aligned=aligned, lost=lost, e_big=v["e_big"],
                    sign_big=v["sign_big"], sign_small=v["sign_small"],
                    subtract=v["subtract"], zero_sign=v["zero_sign"], nan=v["nan"],
                    inf=v["inf"], inf_sign=v["inf_sign"])

        # ---- "add" ----------------------------------------------------------------------
        # With equal exponents the "small" operand may be the larger one: both
        # differences are computed and the non-negative one kept (its sign decides).
        big_ext = Cat(C(0, 3), v["m_big"])
        aligned = v["aligned"] | v["lost"].any()           # sticky into the last place
        d_bs = wire(m, "d_bs", big_ext - aligned)
        neg = v["subtract"] & d_bs[-1]
        total = Mux(v["subtract"], Mux(neg, aligned - big_ext, d_bs),
                    big_ext + aligned)[:28]
        v = p.stage("add", total=total, e_big=v["e_big"],
                    sign=Mux(neg, v["sign_small"], v["sign_big"]),
                    zero_sign=v["zero_sign"], nan=v["nan"], inf=v["inf"],
                    inf_sign=v["inf_sign"])

        # the sum's top bit (the carry) is one place above the big operand's hidden bit,
        # so its biased exponent is e_big + 1: em1 = e_big
        result = normalise_round(p, x=v["total"], em1=v["e_big"], sign=v["sign"],
                                 zero_sign=v["zero_sign"], sticky=C(0, 1), nan=v["nan"],
                                 inf=v["inf"], special_sign=v["inf_sign"],
                                 max_left=28, underflow=False)
        m.d.comb += [self.o.valid.eq(p.finish()), self.o.payload.eq(result)]
        return m
