"""Pieces shared by the binary32 units: payload layouts, the stall-able pipeline builder,
unpacking and classification, leading-zero count, shifts with sticky bits, and the one
normalise-round-pack back end that every unit ends with.

Arithmetic contract (docs/design.md): IEEE-754 binary32, round to nearest even, subnormal
inputs and outputs exact (no flush to zero), signed zeros and infinities as IEEE-754
specifies, and every NaN result is the canonical ``0x7FC00000`` (NaN payloads and the
signalling bit of inputs are not propagated).

Pipelines
=========
Every unit is a chain of combinational steps separated by named *register points*. A unit
lists its points in ``STAGES``; the constructor's ``pipeline`` argument chooses which of
them hold a register (default: the unit's ``DEFAULT_PIPELINE``), so latency can be traded
against clock rate without touching the datapath. The latency in cycles is the number of
enabled points (``unit.latency``). The defaults were chosen for 150 MHz on an ECP5 (see
``refree synth``): each stage holds about one carry chain or four LUT levels.

Netlist hygiene that matters for speed: a value used in more than one place is a named
signal (:func:`wire`), comparisons against constants are written as logic
(:func:`ge_const`) and sticky masks as decoders (:func:`mask_below`) rather than carry
chains, and ``a + b + 1`` is one adder with a carry in (:func:`add_carry`).

All registers of a unit advance together on ``en = ~o.valid | o.ready`` and ``i.ready``
is ``en``: the unit accepts one operation per cycle while its output is taken, holds every
stage while the output is stalled, and fills bubbles when its output is empty. Data
registers have no reset; the valid bits reset to 0, so reset empties the pipeline (results
in flight are dropped).
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Const, Mux, Signal, Value
from amaranth.lib import data

__all__ = [
    "CANONICAL_NAN", "POS_INF", "Binary", "AddSub", "Ternary", "Unary",
    "NORMALISE_STAGES", "MULTIPLY_STAGES", "DSP_KINDS",
    "Pipeline", "check_pipeline", "check_dsp", "wire", "Unpacked",
    "ge_const", "add_carry", "mask_below", "or_groups", "lzc", "lzc_leaves", "lzc_tree",
    "limit_mask", "normalise_prep", "normalise_round", "multiply_24x24", "f32_bits",
]

CANONICAL_NAN = 0x7FC00000
POS_INF = 0x7F800000


def f32_bits(value) -> int:
    """The binary32 bit pattern of a Python number, rounded once (for constants)."""
    import struct
    return struct.unpack("<I", struct.pack("<f", float(value)))[0]

#: Operand payloads (first field in the low bits of the packed vector).
Binary = data.StructLayout({"a": 32, "b": 32})
AddSub = data.StructLayout({"a": 32, "b": 32, "sub": 1})
Ternary = data.StructLayout({"a": 32, "b": 32, "c": 32})
Unary = data.StructLayout({"a": 32})

#: Register points of :func:`normalise_round`, in order.
NORMALISE_STAGES = ("norm", "lzc", "shift1", "shift2", "sticky", "round")

#: Register points of :func:`multiply_24x24`, in order (the first one registers its
#: operands).
MULTIPLY_STAGES = ("prenorm", "pp", "pmid", "psum")


def wire(m, name, value):
    """A named combinational signal driven by ``value``.

    Amaranth lowers an expression again at every place it is used, so a value used more
    than once (a tree node, a classified operand) must be a signal, or the netlist (and
    Verilator's build time) grows exponentially with the depth of the tree."""
    shape = value.shape() if isinstance(value, data.View) else Value.cast(value).shape()
    sig = Signal(shape, name=name)
    m.d.comb += sig.eq(value)
    return sig


def check_pipeline(cls_name: str, stages: tuple, default, pipeline):
    """Validate a ``pipeline`` argument; return the enabled register points (a frozenset)."""
    if pipeline is None:
        return frozenset(default)
    if isinstance(pipeline, str):
        raise TypeError(f"Pipeline must be an iterable of stage names, not {pipeline!r}")
    enabled = frozenset(pipeline)
    unknown = sorted(enabled - set(stages))
    if unknown:
        raise ValueError(f"Unknown pipeline stage {unknown[0]!r}; the stages of {cls_name} "
                         f"are {stages!r}")
    return enabled


class Pipeline:
    """Builds a stall-able pipeline inside ``elaborate``.

    ``stage(name, **values)`` marks a register point: when ``name`` is enabled, each value
    (a ``Value``, a ``data.View``, a list or dict of them, or a Python constant) goes through a
    register that loads when ``en`` is high, and the valid bit does too. It returns the
    values to use downstream (registered or not) as a ``dict``.
    """

    def __init__(self, m, stages, enabled, en, valid, prefix=""):
        self.m = m
        self.stages = tuple(stages)
        self.enabled = frozenset(enabled)
        self.en = en
        self.valid = valid
        self.prefix = prefix
        self.used = []
        self.latency = 0

    def _sig(self, name, v, domain):
        if isinstance(v, (int, bool, Const)) or v is None:
            return v
        if isinstance(v, (list, tuple)):
            return type(v)(self._sig(f"{name}_{i}", x, domain) for i, x in enumerate(v))
        if isinstance(v, dict):
            return {k: self._sig(f"{name}_{k}", x, domain) for k, x in v.items()}
        shape = v.shape() if isinstance(v, data.View) else Value.cast(v).shape()
        r = Signal(shape, name=name, reset_less=True)
        if domain == "sync":
            with self.m.If(self.en):
                self.m.d.sync += r.eq(v)
        else:
            self.m.d.comb += r.eq(v)
        return r

    def wire(self, name, value):
        """A named combinational signal for ``value`` (see :func:`wire`)."""
        return wire(self.m, f"{self.prefix}{name}", value)

    def stage(self, name, **values):
        if name not in self.stages:
            raise ValueError(f"{name!r} is not a register point of this pipeline")
        if name in self.used:
            raise ValueError(f"Register point {name!r} used twice")
        self.used.append(name)
        tag = f"{self.prefix}{name}"
        if name not in self.enabled:
            # No register, but still named signals: keeps expressions small and readable.
            return {k: self._sig(f"{tag}_{k}", v, "comb") for k, v in values.items()}
        self.latency += 1
        valid = Signal(name=f"{tag}_valid")
        with self.m.If(self.en):
            self.m.d.sync += valid.eq(self.valid)
        self.valid = valid
        return {k: self._sig(f"{tag}_{k}", v, "sync") for k, v in values.items()}

    def finish(self):
        """Check that every register point was visited (a datapath bug otherwise)."""
        missing = [s for s in self.stages if s not in self.used]
        if missing:
            raise AssertionError(f"register points never reached: {missing}")
        return self.valid


class Unpacked:
    """Fields and class of a binary32 bit pattern (combinational).

    Attributes
    ----------
    sign, exp, frac : Value
        The three fields.
    mant : Value
        24-bit significand with the hidden bit (0 for zero and subnormals).
    e : Value
        Effective biased exponent: ``exp``, or 1 for zero and subnormals (they share the
        scale of the smallest normal binade).
    is_zero, is_sub, is_inf, is_nan : Value
        Classes.
    """

    def __init__(self, m, bits, name="x"):
        bits = wire(m, name, bits)
        self.sign = bits[31]
        self.exp = bits[23:31]
        self.frac = bits[0:23]
        exp_zero = wire(m, f"{name}_exp_zero", self.exp == 0)
        exp_ones = wire(m, f"{name}_exp_ones", self.exp == 0xFF)
        frac_zero = wire(m, f"{name}_frac_zero", self.frac == 0)
        self.is_zero = wire(m, f"{name}_is_zero", exp_zero & frac_zero)
        self.is_sub = wire(m, f"{name}_is_sub", exp_zero & ~frac_zero)
        self.is_inf = wire(m, f"{name}_is_inf", exp_ones & frac_zero)
        self.is_nan = wire(m, f"{name}_is_nan", exp_ones & ~frac_zero)
        self.mant = wire(m, f"{name}_mant", Cat(self.frac, ~exp_zero))
        self.e = wire(m, f"{name}_e", Mux(exp_zero, 1, self.exp))


def ge_const(v, k: int) -> Value:
    """``v >= k`` for an unsigned ``v`` and a constant ``k``, as plain logic (Yosys maps
    comparisons to carry chains, which are slower than a LUT or two for short values)."""
    v = Value.cast(v)
    if k <= 0:
        return C(1, 1)
    if k >= (1 << len(v)):
        return C(0, 1)
    result = C(1, 1)                       # v[:0] >= k[:0]
    for i in range(len(v)):                # build from the LSB up
        if (k >> i) & 1:
            result = v[i] & result
        else:
            result = v[i] | result
    return result


def add_carry(a, b, cin) -> Value:
    """``a + b + cin`` as one adder (a carry chain with a carry in), ``max(len) + 1`` bits.

    Written as ``a + b + cin`` Yosys builds two adders in a row; appending ``cin`` below
    both operands carries it into bit 1 of a single sum."""
    a, b, cin = Value.cast(a), Value.cast(b), Value.cast(cin)
    return (Cat(cin, a) + Cat(cin, b))[1:]


def lzc_leaves(m, x, name="lzc"):
    """First level of a leading-zero count: ``(zero, count)`` of each 4-bit group of
    ``x``, most significant first, padded below with ones (so a zero ``x`` counts as
    ``len(x)``)."""
    x = wire(m, f"{name}_in", x)
    w = len(x)
    n = -(-(w + 1) // 4) * 4
    bits = [x[i] for i in reversed(range(w))] + [C(1, 1)] * (n - w)   # MSB first
    leaves = []
    for k in range(0, n, 4):
        b3, b2, b1, b0 = bits[k:k + 4]
        zero = ~b3 & ~b2 & ~b1 & ~b0
        count = Cat(~b3 & (b2 | ~b1), ~b3 & ~b2)
        leaves.append((wire(m, f"{name}_z{k // 4}", zero),
                       wire(m, f"{name}_c{k // 4}", count)))
    return leaves


def lzc_tree(m, nodes, levels=None, name="lzc"):
    """Combine ``(zero, count)`` nodes pairwise, ``levels`` times (default: down to one
    node). Returns the remaining node list."""
    nodes = list(nodes)
    level = 0
    while len(nodes) > 1 and (levels is None or level < levels):
        width = len(Value.cast(nodes[0][1]))
        while len(nodes) % 2:
            nodes.append((C(0, 1), C(0, width)))   # never selected: a real 1 comes first
        out = []
        for j in range(0, len(nodes), 2):
            (zh, ch), (zl, cl) = nodes[j], nodes[j + 1]
            out.append((wire(m, f"{name}_l{level}z{j // 2}", zh & zl),
                        wire(m, f"{name}_l{level}c{j // 2}", Cat(Mux(zh, cl, ch), zh))))
        nodes = out
        level += 1
    return nodes


def lzc(m, x, name="lzc") -> Value:
    """Leading-zero count of ``x`` (``len(x)`` when ``x`` is 0)."""
    return lzc_tree(m, lzc_leaves(m, x, name), name=name)[0][1]


def mask_below(amount, width: int) -> Value:
    """``width`` bits, bit ``i`` set when ``i < amount`` (a decoder, no carry chain)."""
    ones = C((1 << width) - 1, width)
    return ~(ones << amount)[:width]


def or_groups(v, group=16):
    """OR-reduce ``v`` in groups of ``group`` bits (the first level of a wide OR)."""
    v = Value.cast(v)
    return Cat(*(v[k:k + group].any() for k in range(0, len(v), group)))


def limit_mask(em1, width: int) -> Value:
    """One bit set where the leading one of a ``width``-bit significand with exponent
    ``em1`` would reach the subnormal scale (bit ``width - 1 - em1``; the top bit when
    ``em1 < 0``; none when ``em1 >= width``). ORed into the counted copy of the
    significand, it caps the leading-zero count at ``em1``."""
    em1 = Value.cast(em1)
    if not em1.shape().signed:
        em1 = Cat(em1, C(0, 1)).as_signed()
    return Cat(*[(em1 == width - 1 - i) for i in range(width - 1)], (em1 == 0) | em1[-1])


def normalise_prep(em1, width: int, max_left: int, underflow: bool) -> dict:
    """The exponent-only inputs of :func:`normalise_round`'s back end (a dict of values
    to register alongside the datapath when the exponent is known early)."""
    em1 = Value.cast(em1)
    if not em1.shape().signed:
        em1 = Cat(em1, C(0, 1)).as_signed()
    aw = max(width.bit_length(), 1)
    tiny = em1[-1] if underflow else C(0, 1)          # em1 < 0: the exponent is below 1
    prep = {"em1": em1, "tiny": tiny, "ep1": em1 + 1}
    if max_left >= width:
        prep["limit"] = limit_mask(em1, width)
    else:
        prep["can_left"] = ~tiny & (em1 != 0)
    if underflow:
        # the right shift is -em1 >= 1; carried as -em1 - 1 = ~em1 (no carry chain),
        # capped at width - 1 (everything shifted out)
        nem1 = ~em1
        cap = nem1[aw:].any() | ge_const(nem1[:aw], width - 1)
        prep["right"] = Mux(tiny, Mux(cap, width - 1, nem1[:aw]), 0)[:aw]
    else:
        prep["right"] = C(0, 1)
    return prep


def normalise_round(p: Pipeline, *, x, em1, sign, zero_sign, sticky, nan=C(0, 1),
                    inf=C(0, 1), zero=C(0, 1), special_sign=C(0, 1), max_left, underflow,
                    tree_in_norm=0, prep=None):
    """Normalise, round to nearest even and pack; the back end of every unit.

    Parameters
    ----------
    p : Pipeline
        Register points :data:`NORMALISE_STAGES`: ``"norm"`` (limit mask and the first
        level of the leading-zero count), ``"lzc"`` (the rest of the count),
        ``"shift1"``/``"shift2"`` (coarse and fine shift), ``"sticky"`` (guard, sticky,
        round-up decision), ``"round"`` (increment and pack).
    x : Value, unsigned W >= 25 bits
        Significand: the value is ``x / 2**(W-1) * 2**(em1 + 1 - 127)`` (plus ``sticky``).
    em1 : Value
        Biased exponent of ``x``'s top bit position, minus one (signed or unsigned).
    sign : Value
        Sign of a nonzero result.
    zero_sign : Value
        Sign of an exact zero result (``x == 0`` and not ``sticky``).
    sticky : Value
        Nonzero bits below ``x`` (inexact).
    nan, inf, zero, special_sign : Value
        Results that the unit decided early: the canonical NaN, or an infinity or a zero
        with sign ``special_sign`` (in that order of precedence). Four bits travel down
        the pipeline instead of a 32-bit pattern.
    max_left : int
        Largest left shift that can be needed: ``W`` for units that can cancel (adder,
        FMA), 1 for units whose ``x`` has its top bit in the top two positions.
    underflow : bool
        Whether the exponent can be below 1 (results below the smallest normal binade need
        a right shift into the subnormal range, with a sticky bit).
    tree_in_norm : int
        Levels of the leading-zero tree computed before the ``"norm"`` register.
    prep : dict, optional
        ``normalise_prep(em1, W, max_left, underflow)`` computed (and registered) by the
        caller in an earlier stage: it only depends on the exponent, which is often known
        long before ``x``. ``em1`` is then ignored.

    The left shift stops where the exponent reaches 1 (the subnormal scale): a one is
    ORed into the counted copy of ``x`` at that position, so the count is
    ``min(leading zeros, em1)`` without a comparison. Rounding adds the round-up bit to the
    packed exponent and fraction, so a carry moves into the exponent (and to infinity).

    Returns the 32-bit result after the ``"round"`` point.
    """
    m = p.m
    x = wire(m, "norm_x", x)
    W = len(x)
    assert W >= 25
    aw = max(W.bit_length(), 1)                       # width of shift amounts (<= W)
    if prep is None:
        prep = normalise_prep(em1, W, max_left, underflow)
    prep = {k: wire(m, f"norm_{k}", val) for k, val in prep.items()}
    em1, tiny, right = prep["em1"], prep["tiny"], prep["right"]
    is_zero = ~x.any() & ~sticky
    spec = dict(nan=nan, inf=inf, zero=zero, special_sign=special_sign)
    names = tuple(spec)
    # ---- "norm" ---------------------------------------------------------------------
    if max_left >= W:
        nodes = lzc_tree(m, lzc_leaves(m, x | prep["limit"], "norm_lz"), tree_in_norm,
                         "norm_lz")
        left1 = C(0, 1)
    else:
        assert max_left == 1
        nodes = []
        left1 = ~x[W - 1] & prep["can_left"]
    v = p.stage("norm", x=x, nodes=nodes, left1=left1, right=right, tiny=tiny,
                ep1=prep["ep1"], sign=Mux(is_zero, zero_sign, sign), sticky=sticky,
                **spec)
    # ---- "lzc" ----------------------------------------------------------------------
    if max_left >= W:
        left = lzc_tree(m, v["nodes"], name="norm_lzt")[0][1][:aw]
    else:
        left = Cat(v["left1"], C(0, aw - 1))
    rlost = C(0, 1)
    if underflow:
        # bits below position right + 1 are lost (when tiny)
        lost_mask = ~(C((1 << W) - 2, W) << v["right"])[:W]
        rlost = or_groups(v["x"] & Mux(v["tiny"], lost_mask, 0), 8)
    v = p.stage("lzc", x=v["x"], left=left, right=v["right"], tiny=v["tiny"], ep1=v["ep1"],
                rlost=rlost, sign=v["sign"], sticky=v["sticky"], **{k: v[k] for k in names})
    # ---- "shift1": multiples of 8 ---------------------------------------------------
    x, left, right = v["x"], v["left"], v["right"]
    coarse_l = (x << Cat(C(0, 3), left[3:]))[:W] if aw > 3 else x
    xr = x[1:]                                         # the +1 of the right shift
    coarse_r = (xr >> Cat(C(0, 3), right[3:]))[:W - 1] if (underflow and aw > 3) else xr
    v = p.stage("shift1", xl=coarse_l, xr=coarse_r, left=left[:3], right=right[:3],
                tiny=v["tiny"], e_after=v["ep1"] - left, sticky=v["sticky"] | v["rlost"].any(),
                sign=v["sign"], **{k: v[k] for k in names})
    # ---- "shift2": 0..7 -------------------------------------------------------------
    y = (v["xl"] << v["left"])[:W]
    if underflow:
        y = Mux(v["tiny"], (v["xr"] >> v["right"])[:W], y)
    v = p.stage("shift2", y=y, tiny=v["tiny"], e_after=v["e_after"], sticky=v["sticky"],
                sign=v["sign"], **{k: v[k] for k in names})
    # ---- "sticky": guard, sticky, round up? -----------------------------------------
    y = v["y"]
    sig = y[W - 24:W]
    guard = y[W - 25]
    st = v["sticky"]
    if W > 25:
        st = st | y[:W - 25].any()
    normal = y[W - 1]
    e_after = v["e_after"]
    inc = guard & (st | sig[0])
    overflow = normal & (e_after >= 255)
    v = p.stage("sticky", frac=sig[:23], field=Mux(normal, e_after[:8], 0), inc=inc,
                sign=v["sign"], nan=v["nan"],
                inf=v["inf"] | (overflow & ~v["zero"]),
                zero=v["zero"], special_sign=Mux(v["inf"] | v["zero"], v["special_sign"],
                                                 v["sign"]))
    # ---- "round" --------------------------------------------------------------------
    mag = (Cat(v["frac"], v["field"]) + v["inc"])[:31]     # a carry moves into the exponent
    fixed = Mux(v["inf"], C(POS_INF, 31), C(0, 31))
    result = Mux(v["nan"], CANONICAL_NAN,
                 Mux(v["inf"] | v["zero"], Cat(fixed, v["special_sign"]),
                     Cat(mag, v["sign"])))
    return p.stage("round", result=result)["result"]


#: Implementations of :func:`multiply_24x24`'s partial products.
DSP_KINDS = ("generic", "ecp5")


def check_dsp(cls_name: str, dsp):
    if dsp not in DSP_KINDS:
        raise ValueError(f"DSP kind must be one of {DSP_KINDS!r}, not {dsp!r}")
    return dsp


def _mult18x18d(m, a, b, en, reg_in, reg_out, name):
    """An ECP5 ``MULT18X18D`` computing the unsigned product ``a * b`` (up to 18 x 18
    bits), with its input and/or output registers clocked by ``sync`` and enabled by
    ``en``."""
    from amaranth.hdl import ClockSignal, Instance
    a = Cat(Value.cast(a), C(0, 18 - len(a)))
    b = Cat(Value.cast(b), C(0, 18 - len(b)))
    product = Signal(36, name=f"{name}_p")
    ports = {}
    for i in range(18):
        ports[f"i_A{i}"] = a[i]
        ports[f"i_B{i}"] = b[i]
        ports[f"i_C{i}"] = C(0, 1)
    for i in range(36):
        ports[f"o_P{i}"] = product[i]
    clocked = "CLK0"
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=clocked if reg_in else "NONE", p_REG_INPUTA_CE="CE0",
        p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK=clocked if reg_in else "NONE", p_REG_INPUTB_CE="CE0",
        p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK=clocked if reg_out else "NONE", p_REG_OUTPUT_CE="CE0",
        p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
        p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_HIGHSPEED_CLK="NONE",
        i_SIGNEDA=C(0, 1), i_SIGNEDB=C(0, 1), i_SOURCEA=C(0, 1), i_SOURCEB=C(0, 1),
        i_CLK0=ClockSignal("sync"), i_CLK1=C(0, 1), i_CLK2=C(0, 1), i_CLK3=C(0, 1),
        i_CE0=en, i_CE1=C(1, 1), i_CE2=C(1, 1), i_CE3=C(1, 1),
        i_RST0=C(0, 1), i_RST1=C(0, 1), i_RST2=C(0, 1), i_RST3=C(0, 1),
        **ports)
    return product


def multiply_24x24(p: Pipeline, a, b, *, dsp="generic", work=None, **carry):
    """48-bit product of two 24-bit significands, split over four 12x12 partial products
    (each fits one ECP5 ``MULT18X18D``).

    ``a`` and ``b`` are taken *before* the register point ``"prenorm"``, which this
    function passes (with ``carry``); then come ``"pp"`` after the partial products,
    ``"pmid"`` after the sum of the two middle ones and ``"psum"`` after the product.
    ``carry`` values travel alongside; ``work`` maps a register point to a function
    ``carry -> carry`` applied just before it, so callers can compute in the shadow of the
    multiplier. Returns ``(product, carry)``.

    With ``dsp="ecp5"`` the partial products are explicit ``MULT18X18D`` blocks whose own
    output registers stand in for the ``"pp"`` registers of the products (same latency;
    Yosys does not put registers into ECP5 DSP blocks by itself, and the multiplier array
    alone takes about 4 ns). ``"generic"`` uses ``*`` (any target, and simulation).
    """
    work = work or {}
    a, b = Value.cast(a), Value.cast(b)
    halves = lambda x: (x[:12], x[12:24])               # noqa: E731
    names = ("ll", "lh", "hl", "hh")
    pairs = lambda al, ah, bl, bh: ((al, bl), (al, bh), (ah, bl), (ah, bh))  # noqa: E731
    if dsp == "ecp5":
        carry = work.get("prenorm", dict)(carry)
        v = p.stage("prenorm", a=a, b=b, **carry)
        al, ah = halves(v["a"])
        bl, bh = halves(v["b"])
        reg_out = "pp" in p.enabled
        products = [_mult18x18d(p.m, x, y, p.en, False, reg_out, f"dsp_{n}")[:24]
                    for n, (x, y) in zip(names, pairs(al, ah, bl, bh))]
        carry = work.get("pp", dict)({k: v[k] for k in carry})
        v = p.stage("pp", **carry)
        v.update(zip(names, products))
    else:
        carry = work.get("prenorm", dict)(carry)
        v = p.stage("prenorm", a=a, b=b, **carry)
        al, ah = halves(v["a"])
        bl, bh = halves(v["b"])
        carry = work.get("pp", dict)({k: v[k] for k in carry})
        v = p.stage("pp", **{n: x * y for n, (x, y) in zip(names, pairs(al, ah, bl, bh))},
                    **carry)
    carry = work.get("pmid", dict)({k: v[k] for k in carry})
    base = Cat(v["ll"][:24], v["hh"][:24])          # ll < 2**24: no overlap with hh
    v = p.stage("pmid", base=base, mid=v["lh"] + v["hl"], **carry)
    carry = work.get("psum", dict)({k: v[k] for k in carry})
    product = (v["base"] + Cat(C(0, 12), v["mid"]))[:48]
    v = p.stage("psum", product=product, **carry)
    return v["product"], {k: v[k] for k in carry}
