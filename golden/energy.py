"""Energy of a job from its counters: the DRAM's commands and background, fp32 arithmetic,
SRAM accesses.  Every rule is stated once, here; the figures are named constants below, each
with its source.

The input is plain numbers (:func:`job_energy`), so that an RTL run (``refree rtl-check``,
:func:`refree.gen.rtl.rtl_job_energy`) and a performance model can both use it.

**DRAM** -- per rank of 8 Micron MT40A1G8 devices (8 Gb x8 DDR4-2400, VDD = 1.2 V), by the
method of Micron TN-40-07 ("Calculating Memory Power for DDR4 SDRAM") as DRAMsim3 applies it
(``Config::InitPowerParams``): a command costs the current it draws above active standby
(IDD3N) for as long as it draws it, and the background is paid apart, by time::

    ACT+PRE = VDD * (IDD0 * tRC - (IDD3N * tRAS + IDD2N * tRP))   per ACT (its PRE included)
    RD      = VDD * (IDD4R - IDD3N) * BL/2 * tCK                   per 64-byte burst
    WR      = VDD * (IDD4W - IDD3N) * BL/2 * tCK                   per 64-byte burst
    REF     = VDD * (IDD5B - IDD3N) * tRFC                         per all-bank REF
    background = VDD * IDD3N (active standby: a bank open) or VDD * IDD2N (all precharged)

each per device, x 8 devices a rank; mA x V x ns = pJ.  The times are the speed grade's own
clock counts (:mod:`refree.hw.ddr4.timing`: tRC 55, tRAS 39, tRP 16, tRFC 420 clocks of
0.8333 ns at DDR4-2400) -- what the controller waits, and DRAMsim3's figures too.  Background:
the counters do not say how long a bank was open, and the rank controller keeps rows open (a
bank closes only on a conflict or for a REF), so a rank is taken to be in active standby for
the whole run unless the counts give ``open_cycles``.  At another speed grade the timings are
that grade's but the currents stay DDR4-2400's (faster bins draw a little more).
Excluded: the DQ drivers and on-die termination (I/O), the VPP wordline supply (2.5 V, IPP0
3 mA: DRAMsim3 leaves it out too), power-down and self refresh (the controller uses neither).

**Logic** -- Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
at 45 nm and 0.9 V: 0.9 pJ an fp32 addition, 3.7 pJ an fp32 multiply; there is no FMA figure,
so an FMA counts as one addition and one multiply.  Scaling to the node of an actual buffer
chip is left to the reader.  The operations, per element (``D`` a row, 16 a 64-byte beat):

* ``adds x D`` and ``muls x D``: the fold datapath's and the baseline updater's vector
  operations as the counters count them (docs/design.md section 2: an operation whose addend is
  +0 is no addition, a coefficient of 1 no multiply -- though the datapath's FMA runs them);
* ``16 x table_writes`` additions and multiplies: the update of each written table element
  (SGD and row-wise Adagrad alike, ``E' = fma(-m, g, E)``);
* ``D x state_writes`` additions and multiplies: row-wise Adagrad's sum of the squares of
  each updated row's gradient (a state beat is written once per row); its scalar chain per
  row (a division, a square root) has no figure and is left out, as is the mean-pooled
  forward's division (the counters do not count it).

**SRAM** -- Horowitz's 64-bit access energies: 10 pJ from an 8 KB array, 20 pJ from 32 KB,
100 pJ from 1 MB, interpolated linearly in log(size) between neighbouring points (below 8 KB:
10 pJ; above 1 MB: the 32 KB-1 MB line extended).  A 64-byte beat is 8 words.  Counted: each
table beat read from DRAM is written into the row store once and read from it once; each
vector addition reads its partial sum and writes the sum back (``2 x adds x D/16`` beats of
the fold datapath's partial-sum buffer).  Both are charged at one array size, ``sram_bytes``:
the row store's (:func:`row_store_bytes`), the partial-sum buffer being as large (one row per
bag or distinct row, plus 3).  Not counted: the first write of a partial sum (an operation
without an addend), finished sums read out, the datapath's few row slots, FIFOs of a few
entries (registers), the analyzer's tables and the lookup buffer.

Excluded altogether: the host, the analyzer's and the controllers' control logic, the clock
tree, leakage of the chip's logic and SRAM, and DRAM I/O and termination (above).
"""
import math
import numbers

from refree.hw.ddr4.timing import speed_grade

__all__ = ["VDD_V", "DEVICES_PER_RANK", "IDD0_MA", "IDD2N_MA", "IDD3N_MA", "IDD4R_MA", "IDD4W_MA",
           "IDD5B_MA", "FP32_ADD_J", "FP32_MUL_J", "SRAM_WORD_J_BY_BYTES", "WORDS_PER_BEAT",
           "LANES_PER_BEAT", "COUNTS", "dram_command_energies", "sram_word_energy", "row_store_bytes",
           "operation_counts", "job_energy"]

# --- DRAM: Micron MT40A1G8 8 Gb x8 DDR4-2400 (-083E) datasheet IDD table, the figures DRAMsim3
# carries in configs/DDR4_8Gb_x8_2400.ini [power] and gem5 in DDR4_2400_8x8.  Per device, mA.
VDD_V = 1.2
IDD0_MA = 48        # one bank ACT-PRE at tRC
IDD2N_MA = 34       # precharge standby
IDD3N_MA = 43       # active standby
IDD4R_MA = 135      # burst read
IDD4W_MA = 123      # burst write
IDD5B_MA = 250      # all-bank refresh burst, over tRFC
DEVICES_PER_RANK = 8    # x8 devices on a 64-bit rank

# --- Logic and SRAM: Horowitz, ISSCC 2014, 45 nm, 0.9 V.
FP32_ADD_J = 0.9e-12
FP32_MUL_J = 3.7e-12
#: a 64-bit SRAM access by the array's size in bytes
SRAM_WORD_J_BY_BYTES = ((8 << 10, 10e-12), (32 << 10, 20e-12), (1 << 20, 100e-12))

BEAT_BYTES = 64
WORDS_PER_BEAT = BEAT_BYTES // 8
LANES_PER_BEAT = BEAT_BYTES // 4        # fp32 elements of a beat

#: the counts :func:`job_energy` reads: the ranks' commands summed over the ranks, then the
#: engine's counters (:class:`refree.hw.engine.engine.Engine`'s, in 64-byte beats for traffic)
COUNTS = ("reads", "writes", "activates", "refreshes",
          "cycles", "adds", "muls", "table_reads", "table_writes", "state_writes")


def dram_command_energies(grade="DDR4-2400"):
    """Per rank, in joules: ``act_pre``, ``rd``, ``wr``, ``ref`` per command and, in watts,
    ``active_standby`` and ``precharge_standby`` (the module's formulas, at ``grade``'s
    timings).

    At DDR4-2400: ACT+PRE 3.35 nJ, RD 2.94 nJ, WR 2.56 nJ, REF 696 nJ, 413 mW and 326 mW.
    The anchor figures of issue 17 (from the same formulas) agree within 0.5 % but for
    ACT+PRE, given as 3.45 nJ: their RD, WR and REF come out of tCK = 0.83 ns, yet neither that
    clock nor any consistent rounding of tRC/tRAS/tRP gives 3.45 (JEDEC's nanoseconds, 45.32 /
    32 / 13.32, give 3.33 nJ; the clock counts at 0.83 ns 3.34 nJ, at 0.8333 ns 3.35 nJ), so
    3.45 is a slip and the formula's 3.35 nJ stands."""
    g = speed_grade(grade)
    t = g.timing()
    tck_ns = float(g.tck_ps) / 1000
    ns = lambda clocks: clocks * tck_ns
    per_device_pj = {       # mA x V x ns = pJ
        "act_pre": VDD_V * (IDD0_MA * ns(t.tRC) - (IDD3N_MA * ns(t.tRAS) + IDD2N_MA * ns(t.tRP))),
        "rd": VDD_V * (IDD4R_MA - IDD3N_MA) * ns(t.burst_clocks),
        "wr": VDD_V * (IDD4W_MA - IDD3N_MA) * ns(t.burst_clocks),
        "ref": VDD_V * (IDD5B_MA - IDD3N_MA) * ns(t.tRFC)}
    out = {k: v * DEVICES_PER_RANK * 1e-12 for k, v in per_device_pj.items()}
    out["active_standby"] = VDD_V * IDD3N_MA * 1e-3 * DEVICES_PER_RANK
    out["precharge_standby"] = VDD_V * IDD2N_MA * 1e-3 * DEVICES_PER_RANK
    return out


def sram_word_energy(nbytes):
    """Joules of a 64-bit access to an SRAM array of ``nbytes`` (the module's interpolation)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Real) or not nbytes > 0:
        raise ValueError(f"SRAM size must be a positive number of bytes, not {nbytes!r}")
    points = SRAM_WORD_J_BY_BYTES
    if nbytes <= points[0][0]:
        return points[0][1]
    # the segment that holds nbytes; above the largest array, the last segment extended
    (s0, e0), (s1, e1) = next(((a, b) for a, b in zip(points, points[1:]) if nbytes <= b[0]), points[-2:])
    return e0 + (e1 - e0) * math.log(nbytes / s0) / math.log(s1 / s0)


def row_store_bytes(params, dim):
    """Bytes of the engine's row store: its slots (``EngineParams.slot_capacity``, the rule
    the engine sizes it by) of ``dim`` fp32 elements."""
    return params.slot_capacity * dim * 4


def operation_counts(counts, dim):
    """The fp32 additions and multiplies and the 64-bit SRAM words a job's counters imply (the
    module's rules): ``{"fp_adds", "fp_muls", "sram_words"}``."""
    per_row = dim / LANES_PER_BEAT
    updated = LANES_PER_BEAT * counts["table_writes"] + dim * counts["state_writes"]
    return {"fp_adds": dim * counts["adds"] + updated,
            "fp_muls": dim * counts["muls"] + updated,
            "sram_words": WORDS_PER_BEAT * (2 * counts["table_reads"] + 2 * counts["adds"] * per_row)}


def job_energy(counts, *, ranks, dim, sram_bytes, lookups=None, grade="DDR4-2400", clock_hz=None):
    """A job's energy in joules, by component (the module's rules).

    Parameters
    ----------
    counts:
        A dict with every key of :data:`COUNTS`: ``reads``, ``writes``, ``activates``,
        ``refreshes`` summed over the ranks; ``cycles`` of the chip's clock; the engine's
        ``adds``, ``muls`` (vector operations on rows) and ``table_reads``, ``table_writes``,
        ``state_writes`` (64-byte beats).  An optional ``open_cycles`` (rank-clocks with a bank
        open, summed over the ranks) replaces the assumption of active standby throughout.
    ranks:
        Ranks of the run (each pays its background).
    dim:
        D, the vector length of a row as the engine holds it.
    sram_bytes:
        The on-chip array the SRAM accesses are charged at (:func:`row_store_bytes`).
    lookups:
        The job's lookups (the batch's indices), for ``pj_per_lookup`` (None without).
    grade, clock_hz:
        The ranks' speed grade; the chip's clock, by default the grade's (the chip runs at
        the DRAM clock).

    Returns
    -------
    ``{"dram": {"act_pre", "rd", "wr", "ref", "background"}, "logic": {"fp_add", "fp_mul"},
    "sram", "total", "pj_per_lookup"}``, joules except ``pj_per_lookup``.
    """
    missing = [k for k in COUNTS if k not in counts]
    if missing:
        raise ValueError(f"counts lack {', '.join(missing)}")
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be a positive integer, not {ranks!r}")
    e = dram_command_energies(grade)
    seconds_per_cycle = 1 / clock_hz if clock_hz else float(speed_grade(grade).tck_ps) * 1e-12
    rank_cycles = ranks * counts["cycles"]
    open_cycles = counts.get("open_cycles", rank_cycles)
    background = seconds_per_cycle * (e["active_standby"] * open_cycles
                                      + e["precharge_standby"] * (rank_cycles - open_cycles))
    ops = operation_counts(counts, dim)
    out = {"dram": {"act_pre": e["act_pre"] * counts["activates"], "rd": e["rd"] * counts["reads"],
                    "wr": e["wr"] * counts["writes"], "ref": e["ref"] * counts["refreshes"],
                    "background": background},
           "logic": {"fp_add": FP32_ADD_J * ops["fp_adds"], "fp_mul": FP32_MUL_J * ops["fp_muls"]},
           "sram": sram_word_energy(sram_bytes) * ops["sram_words"]}
    out["total"] = sum(out["dram"].values()) + sum(out["logic"].values()) + out["sram"]
    out["pj_per_lookup"] = out["total"] * 1e12 / lookups if lookups else None
    return out
