"""Pipelined binary32 fused multiply-add."""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import (MULTIPLY_STAGES, NORMALISE_STAGES, Pipeline, Ternary, Unpacked,
                     add_carry, check_dsp, check_pipeline, ge_const, normalise_prep, lzc,
                     mask_below,
                     multiply_24x24, normalise_round, or_groups, wire)

__all__ = ["FusedMultiplyAdd"]

#: Window layout (bits): 3 below the product's LSB, the 48-bit product, then room for the
#: addend's 24 bits above it; one more bit for the carry of the sum.
_LOW = 3
_C_TOP = 53              # addend LSB position when it is as far left as it can go
_WIN = _C_TOP + 24       # 77 bits; the sum has 78
_HALF = 39               # the window adder is split here across two register points


class FusedMultiplyAdd(wiring.Component):
    """Binary32 ``fma(a, b, c) = a*b + c`` with a single rounding (round to nearest even).

    The product of the normalised significands is exact (48 bits, in ``[2**46, 2**48)``).
    The addend is placed in a 77-bit window relative to it: from 53 bits above the
    product's LSB down to 3 bits below, with the bits shifted out below the window ORed
    into a sticky bit (they are then far below the result's rounding position). When the
    addend lies more than 26 bits above the product's top, the product shrinks to a
    sticky bit under the addend. The window sum or difference (computed both ways, the
    non-negative one kept) goes through the shared back end with a full leading-zero
    count, so massive cancellation and subnormal results are exact. Zero products return
    ``c`` unchanged (or a zero with IEEE's sign rule: -0 only if both are -0); ``0 * inf``,
    ``inf - inf`` and NaN inputs give ``0x7FC00000``.

    Parameters
    ----------
    pipeline : iterable of str, optional
        Register points to enable, out of :attr:`STAGES` (default: all).
    dsp : str
        ``"generic"`` (``*``, any target) or ``"ecp5"`` (explicit ``MULT18X18D`` blocks
        whose internal registers hold the operands and partial products; same latency).

    Attributes
    ----------
    latency : int
        Cycles from an accepted operation to its result (13 by default).

    Members
    -------
    i : In(stream.Signature(Ternary))
        Operands ``a``, ``b``, ``c``.
    o : Out(stream.Signature(32))
        Result bit pattern of ``a*b + c``.

    One operation per cycle; a stalled output holds the pipeline; reset empties it.
    """

    STAGES = ("unpack",) + MULTIPLY_STAGES + ("add", "add2") + NORMALISE_STAGES
    DEFAULT_PIPELINE = STAGES

    def __init__(self, pipeline=None, dsp="generic"):
        self.dsp = check_dsp("FusedMultiplyAdd", dsp)
        self._enabled = check_pipeline("FusedMultiplyAdd", self.STAGES,
                                       self.DEFAULT_PIPELINE, pipeline)
        self.latency = len(self._enabled)
        super().__init__({"i": In(stream.Signature(Ternary)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        p = Pipeline(m, self.STAGES, self._enabled, en, self.i.valid)

        # ---- "unpack": classify; leading zeros of a and b; exponent sums -------------
        a = Unpacked(m, self.i.payload.a, "a")
        b = Unpacked(m, self.i.payload.b, "b")
        c = Unpacked(m, self.i.payload.c, "c")
        # the class flags are combined one stage later (shorter paths)
        v = p.stage("unpack", ma=a.mant, mb=b.mant, mc=c.mant, lza=lzc(m, a.mant, "lza"),
                    lzb=lzc(m, b.mant, "lzb"), esum=a.e + b.e, ce100=c.e + 100,
                    ce=c.e, c_zero=c.is_zero, any_nan=a.is_nan | b.is_nan | c.is_nan,
                    a_inf=a.is_inf, b_inf=b.is_inf, c_inf=c.is_inf, a_zero=a.is_zero,
                    b_zero=b.is_zero, sp=a.sign ^ b.sign, sc=c.sign)

        # ---- "prenorm": normalise a and b; where c goes ---------------------------------
        # a*b = P / 2**46 * 2**(ep - 127), ep = esum - lzs - 127. In the window the
        # addend is shifted right by r = ep - c.e + 27 from its top position; the window
        # top has biased exponent ep + 28 (em1 = ep + 27), or c.e + 1 when the product
        # is only a sticky bit under the addend (em1 = c.e).
        sp, sc = v["sp"], v["sc"]
        prod_inf = v["a_inf"] | v["b_inf"]
        nan = (v["any_nan"] | (v["a_inf"] & v["b_zero"]) | (v["a_zero"] & v["b_inf"]) |
               (prod_inf & v["c_inf"] & (sp ^ sc)))
        carry = dict(mc=v["mc"], lzs=v["lza"] + v["lzb"], r0=v["esum"] - v["ce100"],
                     em1_0=v["esum"] - 100, ce=v["ce"], c_zero=v["c_zero"],
                     prod_zero=v["a_zero"] | v["b_zero"], sp=sp, sc=sc, nan=nan,
                     inf=prod_inf | v["c_inf"], inf_sign=Mux(prod_inf, sp, sc))
        ma, mb = (v["ma"] << v["lza"])[:24], (v["mb"] << v["lzb"])[:24]

        # ---- addend alignment in the shadow of the multiplier -------------------------
        def clamp(cv):                       # before "pp": clamp the shift, pick em1
            lzs = cv.pop("lzs")
            r = wire(m, "r", cv.pop("r0") - lzs)
            # the addend far above: a*b -> sticky bit; a zero product: the addend alone,
            # in the same position (and the window then holds exactly c, or zero)
            psticky = (r[-1] & ~cv.pop("c_zero")) | cv["prod_zero"]
            high = ~r[-1] & (r[7:].any() | ge_const(r[:7], _WIN + 1))
            cv["rc"] = Mux(r[-1] | cv["prod_zero"], 0, Mux(high, _WIN, r[:7]))
            cv["psticky"] = psticky
            cv["em1"] = Mux(psticky, cv.pop("ce"), cv.pop("em1_0") - lzs)
            cv["sub"] = cv["sp"] ^ cv["sc"]
            return cv

        def coarse(cv):                      # before "pmid": shift by multiples of 8
            mc, rc = cv.pop("mc"), cv["rc"]
            window = Cat(C(0, _C_TOP), mc)
            cv["cw"] = (window >> Cat(C(0, 3), rc[3:]))[:_WIN]
            cv["clost"] = or_groups(mc & mask_below(rc, _WIN)[_C_TOP:], 8)
            return cv

        def fine(cv):                        # before "psum": shift by 0..7, sticky in
            rc = cv.pop("rc")
            cv["cw"] = (cv["cw"] >> rc[:3])[:_WIN] | cv.pop("clost").any()
            return cv

        product, v = multiply_24x24(p, ma, mb, dsp=self.dsp,
                                    work={"pp": clamp, "pmid": coarse, "psum": fine}, **carry)

        # ---- "add", "add2": window sum or difference, carry-select ------------------
        # A = xp + xc (sum) or xp - xc (difference); B = xc - xp. "add" computes the low
        # halves and both possible high halves (carry in 0 or 1); "add2" picks them.
        xp = wire(m, "xp", Cat(Mux(v["psticky"], ~v["prod_zero"], Cat(C(0, _LOW), product)),
                               C(0, _WIN - _LOW - 48)))   # _WIN bits
        xc = v["cw"]
        sub = v["sub"]
        h = _HALF
        width = _WIN - h                                   # high bits of the 77-bit window
        xc_a = wire(m, "xc_a", Mux(sub, ~xc, xc))
        xp_n = wire(m, "xp_n", ~xp)
        lo_a = add_carry(xp[:h], xc_a[:h], sub)[:h + 1]    # carry on top
        lo_b = add_carry(xc[:h], xp_n[:h], 1)[:h + 1]
        hi_a0 = add_carry(xp[h:], xc_a[h:], 0)[:width + 1]
        hi_a1 = add_carry(xp[h:], xc_a[h:], 1)[:width + 1]
        hi_b0 = add_carry(xc[h:], xp_n[h:], 0)[:width]
        hi_b1 = add_carry(xc[h:], xp_n[h:], 1)[:width]
        v = p.stage("add", lo_a=lo_a, lo_b=lo_b, hi_a0=hi_a0, hi_a1=hi_a1, hi_b0=hi_b0,
                    hi_b1=hi_b1, sub=sub, em1=v["em1"], sp=v["sp"], sc=v["sc"],
                    nan=v["nan"], inf=v["inf"], inf_sign=v["inf_sign"])
        hi_a = wire(m, "hi_a", Mux(v["lo_a"][h], v["hi_a1"], v["hi_a0"]))
        hi_b = Mux(v["lo_b"][h], v["hi_b1"], v["hi_b0"])
        c_bigger = wire(m, "c_bigger", v["sub"] & ~hi_a[width])   # xp - xc < 0
        a_full = Cat(v["lo_a"][:h], hi_a[:width], hi_a[width] & ~v["sub"])
        b_full = Cat(v["lo_b"][:h], hi_b, C(0, 1))
        x = Mux(c_bigger, b_full, a_full)
        v = p.stage("add2", x=x, prep=normalise_prep(v["em1"], _WIN + 1, _WIN + 1, True),
                    sign=Mux(c_bigger, v["sc"], v["sp"]),
                    zero_sign=v["sp"] & v["sc"], nan=v["nan"], inf=v["inf"],
                    inf_sign=v["inf_sign"])

        result = normalise_round(p, x=v["x"], em1=None, sign=v["sign"],
                                 zero_sign=v["zero_sign"], sticky=C(0, 1), nan=v["nan"],
                                 inf=v["inf"], special_sign=v["inf_sign"],
                                 max_left=_WIN + 1, underflow=True, tree_in_norm=1,
                                 prep=v["prep"])
        m.d.comb += [self.o.valid.eq(p.finish()), self.o.payload.eq(result)]
        return m
