"""The DDR4 rank model: every row of the rule table catches a sequence one clock too tight
and passes it at the minimum spacing; tFAW, the state rules and the refresh rule likewise;
data written reads back; the row hit / miss / conflict counters on a hand-made sequence."""
import re

import numpy as np
import pytest

from refree.hw.ddr4 import RankGeometry, speed_grade
from refree.verif.ddr4_model import (ANY_BANK, OTHER_BANK_GROUP, RULE_ACCESS_CLOSED_BANK,
                                     RULE_ACT_OPEN_BANK, RULE_COMMAND_BUS, RULE_REF_BANK_OPEN,
                                     RULE_REFRESH_OVERDUE, RULE_TFAW, SAME_BANK, SAME_BANK_GROUP,
                                     TIMING_RULES, Ddr4RankModel, Rule)

GRADES = ["DDR4-2400", "DDR4-3200"]
T0 = 1000            # cycle of the rule's first command; the set-up ACTs are far before it
FIRST = (0, 0)       # bank of the rule's first command
ZEROS = np.zeros(64, np.uint8)


def burst(seed):
    return np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8)


def rules_of(model):
    return [v.rule for v in model.violations]


def issue(model, kind, cycle, bank):
    if kind == "ACT":
        model.act(cycle, *bank, 9)
    elif kind == "RD":
        model.rd(cycle, *bank, 0)
    elif kind == "WR":
        model.wr(cycle, *bank, 0, ZEROS)
    elif kind == "PRE":
        model.pre(cycle, *bank)
    else:
        model.ref(cycle)


def targets(rule):
    """Banks of the rule's second command: inside and at the edges of the rule's scope."""
    if rule.cmd == "REF":
        return [None]
    if rule.scope == SAME_BANK:
        return [FIRST]
    if rule.scope == SAME_BANK_GROUP:
        # ACT->ACT in one bank needs a PRE between them, so there tRC is the binding rule.
        return [(0, 1), (0, 3)] + ([] if rule.prev == rule.cmd == "ACT" else [FIRST])
    if rule.scope == OTHER_BANK_GROUP:
        return [(1, 0), (3, 2)]
    return [FIRST, (2, 1)]


def run_rule(grade, rule, target, slack):
    """``rule.prev`` on bank FIRST at T0, then ``rule.cmd`` on ``target`` at T0 + the rule's
    spacing + ``slack``; every other constraint is met with room to spare."""
    model = Ddr4RankModel(grade)
    timing = model.timing
    opened = []
    if rule.prev in ("RD", "WR", "PRE"):
        opened.append(FIRST)
    if (rule.cmd in ("RD", "WR", "PRE") and rule.prev not in ("REF", "ACT")
            and target not in opened):
        opened.append(target)
    for k, bank in enumerate(opened):
        model.act(100 * (k + 1), *bank, 7)
    issue(model, rule.prev, T0, FIRST)
    if rule.prev == rule.cmd == "ACT" and rule.scope == SAME_BANK:
        model.pre(T0 + timing.tRAS, *FIRST)              # the row must close before the next ACT
    issue(model, rule.cmd, T0 + getattr(timing, rule.param) + slack, target)
    return model


# The constraints of docs/design.md section 3, written out here rather than read from the model,
# so that a rule missing from the model's table fails its cases instead of losing them.
EXPECTED_RULES = [
    Rule("ACT", "ACT", SAME_BANK, "tRC"),
    Rule("ACT", "ACT", SAME_BANK_GROUP, "tRRD_L"),
    Rule("ACT", "ACT", OTHER_BANK_GROUP, "tRRD_S"),
    Rule("ACT", "RD", SAME_BANK, "tRCD"),
    Rule("ACT", "WR", SAME_BANK, "tRCD"),
    Rule("ACT", "PRE", SAME_BANK, "tRAS"),
    Rule("PRE", "ACT", SAME_BANK, "tRP"),
    Rule("PRE", "REF", ANY_BANK, "tRP"),
    Rule("RD", "RD", SAME_BANK_GROUP, "tCCD_L"),
    Rule("RD", "RD", OTHER_BANK_GROUP, "tCCD_S"),
    Rule("WR", "WR", SAME_BANK_GROUP, "tCCD_L"),
    Rule("WR", "WR", OTHER_BANK_GROUP, "tCCD_S"),
    Rule("RD", "WR", ANY_BANK, "rd_to_wr"),
    Rule("WR", "RD", SAME_BANK_GROUP, "wr_to_rd_l"),
    Rule("WR", "RD", OTHER_BANK_GROUP, "wr_to_rd_s"),
    Rule("RD", "PRE", SAME_BANK, "tRTP"),
    Rule("WR", "PRE", SAME_BANK, "wr_to_pre"),
    Rule("REF", "ACT", ANY_BANK, "tRFC"),
    Rule("REF", "PRE", ANY_BANK, "tRFC"),
    Rule("REF", "REF", ANY_BANK, "tRFC"),
]

CASES = [pytest.param(rule, target, id=f"{rule.name} -> {target}")
         for rule in EXPECTED_RULES for target in targets(rule)]


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("rule, target", CASES)
def test_rule_catches_one_clock_too_early(grade, rule, target):
    model = run_rule(grade, rule, target, -1)
    expected = [rule.name]
    if rule.param == "tRC":
        # tRC = tRAS + tRP in clocks, so the ACT one clock early is also inside tRP.
        expected.append(Rule("PRE", "ACT", SAME_BANK, "tRP").name)
    assert sorted(rules_of(model)) == sorted(expected)
    found = next(v for v in model.violations if v.rule == rule.name)
    assert (found.required, found.actual) == (getattr(model.timing, rule.param),
                                              getattr(model.timing, rule.param) - 1)
    assert found.cycle == T0 + found.actual


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("rule, target", CASES)
def test_rule_passes_at_minimum_spacing(grade, rule, target):
    model = run_rule(grade, rule, target, 0)
    assert model.violations == []


def test_rule_table_is_the_expected_one():
    assert sorted(TIMING_RULES, key=str) == sorted(EXPECTED_RULES, key=str)
    assert len({r.name for r in TIMING_RULES}) == len(TIMING_RULES)


@pytest.mark.parametrize("prev, cmd, long_rule, short_rule", [
    ("ACT", "ACT", "ACT->ACT tRRD_L (same bank group)", "ACT->ACT tRRD_S (other bank group)"),
    ("RD", "RD", "RD->RD tCCD_L (same bank group)", "RD->RD tCCD_S (other bank group)"),
    ("WR", "WR", "WR->WR tCCD_L (same bank group)", "WR->WR tCCD_S (other bank group)"),
    ("WR", "RD", "WR->RD wr_to_rd_l (same bank group)", "WR->RD wr_to_rd_s (other bank group)"),
])
@pytest.mark.parametrize("same_group", [True, False])
def test_bank_group_scopes_do_not_overlap(prev, cmd, long_rule, short_rule, same_group):
    """One clock apart, a pair inside a bank group breaks only the _L rule and a pair across
    bank groups only the _S rule (the spacing measured from the latest command in scope)."""
    model = Ddr4RankModel("DDR4-2400")
    second = (0, 1) if same_group else (1, 1)
    needs_open = ([FIRST] if prev != "ACT" else []) + ([second] if cmd != "ACT" else [])
    for k, bank in enumerate(needs_open):
        model.act(100 * (k + 1), *bank, 7)
    issue(model, prev, T0, FIRST)
    issue(model, cmd, T0 + 1, second)
    assert rules_of(model) == [long_rule if same_group else short_rule]


# PREA is checked as a PRE to each bank it closes.
PREA_CASES = {
    "ACT->PREA tRAS": ("ACT", "tRAS", "PREA", "ACT->PRE tRAS (same bank)"),
    "RD->PREA tRTP": ("RD", "tRTP", "PREA", "RD->PRE tRTP (same bank)"),
    "WR->PREA wr_to_pre": ("WR", "wr_to_pre", "PREA", "WR->PRE wr_to_pre (same bank)"),
    "PREA->ACT tRP": ("PREA", "tRP", "ACT", "PRE->ACT tRP (same bank)"),
    "PREA->REF tRP": ("PREA", "tRP", "REF", "PRE->REF tRP (any bank of the rank)"),
}


def run_prea_case(grade, case, slack):
    first, param, second, _ = PREA_CASES[case]
    model = Ddr4RankModel(grade)
    model.act(100, 2, 1, 3)              # an older open row, far from every limit
    if first != "ACT":
        model.act(200, *FIRST, 7)
    commands = {"ACT": lambda c: model.act(c, *FIRST, 9), "RD": lambda c: model.rd(c, *FIRST, 0),
                "WR": lambda c: model.wr(c, *FIRST, 0, ZEROS), "PREA": model.prea, "REF": model.ref}
    commands[first](T0)
    commands[second](T0 + getattr(model.timing, param) + slack)
    return model


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("case", sorted(PREA_CASES))
def test_prea_is_checked_like_a_pre_to_each_open_bank(grade, case):
    assert run_prea_case(grade, case, 0).violations == []
    model = run_prea_case(grade, case, -1)
    assert rules_of(model) == [PREA_CASES[case][3]]
    if PREA_CASES[case][2] == "PREA":
        assert "on bg=0 ba=0" in model.violations[0].detail


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("slack", [0, -1])
def test_fifth_act_inside_tfaw_is_caught(grade, slack):
    model = Ddr4RankModel(grade)
    t = model.timing
    banks = [(0, 0), (1, 0), (2, 0), (3, 0)]
    for k, bank in enumerate(banks):
        model.act(T0 + k * t.tRRD_S, *bank, 1)
    assert model.violations == []                     # four ACTs as tight as tRRD_S allows
    model.act(T0 + t.tFAW + slack, 0, 1, 1)
    if slack == 0:
        assert model.violations == []
    else:
        assert rules_of(model) == [RULE_TFAW]
        assert (model.violations[0].required, model.violations[0].actual) == (t.tFAW, t.tFAW - 1)


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("slack", [0, -1])
def test_tfaw_window_slides_with_each_act(grade, slack):
    """The 6th ACT is measured from the 2nd, not from the 1st."""
    model = Ddr4RankModel(grade)
    t = model.timing
    step = t.tRRD_S + 1                                # room for the 6th to move one clock
    banks = [(0, 0), (1, 0), (2, 0), (3, 0)]
    for k, bank in enumerate(banks):
        model.act(T0 + k * step, *bank, 1)
    model.act(T0 + t.tFAW, 0, 1, 1)
    model.act(T0 + step + t.tFAW + slack, 1, 1, 1)
    assert rules_of(model) == ([] if slack == 0 else [RULE_TFAW])


def test_act_to_an_open_bank_is_caught():
    model = Ddr4RankModel("DDR4-2400")
    model.act(100, 1, 2, 5)
    model.act(100 + model.timing.tRC, 1, 2, 6)
    assert rules_of(model) == [RULE_ACT_OPEN_BANK]
    assert "row 5 is open" in model.violations[0].detail
    assert model.open_row(1, 2) == 6


def test_access_to_a_closed_bank_is_caught_and_not_executed():
    model = Ddr4RankModel("DDR4-2400", fill=0xA5)
    data, _ = model.rd(100, 0, 0, 0)
    assert np.all(data == 0xA5)
    model.wr(200, 0, 1, 0, burst(1))
    assert rules_of(model) == [RULE_ACCESS_CLOSED_BANK] * 2
    assert (model.counters.reads, model.counters.writes, model.counters.data_bus_busy_cycles) == (0, 0, 0)
    assert np.all(model.peek(0, 1, 0, 0) == 0xA5)       # the write was dropped everywhere
    assert np.all(model.peek(0, 1, 65535, 0) == 0xA5)


def test_access_after_precharge_is_caught():
    model = Ddr4RankModel("DDR4-2400")
    model.act(100, 0, 0, 5)
    model.pre(200, 0, 0)
    model.rd(300, 0, 0, 0)
    assert rules_of(model) == [RULE_ACCESS_CLOSED_BANK]


def test_ref_with_a_bank_open_is_caught():
    model = Ddr4RankModel("DDR4-2400")
    model.act(100, 3, 1, 5)
    model.ref(1000)
    assert rules_of(model) == [RULE_REF_BANK_OPEN]
    assert "bg=3 ba=1" in model.violations[0].detail


def test_commands_within_trfc_after_ref_are_caught():
    model = Ddr4RankModel("DDR4-3200")
    model.ref(100)
    model.act(100 + model.timing.tRFC - 1, 0, 0, 1)
    model.rd(100 + model.timing.tRFC + 30, 0, 0, 0)    # after tRFC and tRCD: legal
    assert rules_of(model) == ["REF->ACT tRFC (any bank of the rank)"]


def test_two_commands_in_one_clock_are_caught():
    model = Ddr4RankModel("DDR4-2400")
    model.pre(100, 0, 0)                                # a no-op PRE: only the clock clashes
    model.act(100, 1, 0, 1)
    assert rules_of(model) == [RULE_COMMAND_BUS]


def test_commands_going_back_in_time_are_refused():
    model = Ddr4RankModel("DDR4-2400")
    model.act(100, 0, 0, 1)
    with pytest.raises(ValueError, match="cycle must be >= the previous command's cycle 100, not 99"):
        model.pre(99, 0, 0)


def test_strict_mode_raises_at_once():
    model = Ddr4RankModel("DDR4-2400", strict=True)
    model.act(100, 0, 0, 1)
    with pytest.raises(AssertionError, match=re.escape(
            "cycle 115: RD(bg=0, ba=0, col=0) breaks ACT->RD tRCD (same bank): "
            "needs at least 16 clocks, got 15 (after ACT at cycle 100)")):
        model.rd(115, 0, 0, 0)


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("slack", [0, 1])
def test_refresh_overdue_from_start(grade, slack):
    model = Ddr4RankModel(grade)
    limit = 9 * model.timing.tREFI
    model.ref(limit + slack)
    assert rules_of(model) == ([] if slack == 0 else [RULE_REFRESH_OVERDUE])
    if slack:
        assert (model.violations[0].required, model.violations[0].actual) == (limit, limit + 1)


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("slack", [0, 1])
def test_refresh_overdue_between_refs(grade, slack):
    model = Ddr4RankModel(grade)
    limit = 9 * model.timing.tREFI
    model.ref(5000)
    model.ref(5000 + limit + slack)
    assert rules_of(model) == ([] if slack == 0 else [RULE_REFRESH_OVERDUE])


@pytest.mark.parametrize("slack", [0, 1])
def test_refresh_overdue_at_finish(slack):
    model = Ddr4RankModel("DDR4-2400")
    limit = 9 * model.timing.tREFI
    model.ref(5000)
    assert model.finish(5000 + limit + slack) is model.violations
    assert rules_of(model) == ([] if slack == 0 else [RULE_REFRESH_OVERDUE])
    fresh = Ddr4RankModel("DDR4-2400", start_cycle=300)
    fresh.finish(300 + limit + slack)                  # no REF at all: counted from the start
    assert rules_of(fresh) == ([] if slack == 0 else [RULE_REFRESH_OVERDUE])


def test_refresh_every_trefi_with_traffic_is_clean():
    model = Ddr4RankModel("DDR4-2400")
    t = model.timing
    for k in range(1, 21):
        base = k * t.tREFI
        model.ref(base)
        model.act(base + t.tRFC, 0, 0, k)
        model.wr(base + t.tRFC + t.tRCD, 0, 0, 0, burst(k))
        model.pre(base + t.tRFC + t.tRCD + t.wr_to_pre, 0, 0)
    model.finish(21 * t.tREFI)
    assert model.violations == []
    assert model.counters.refreshes == 20


class Sequencer:
    """Issues commands 100 clocks apart (1000 after a REF): every spacing is legal."""

    def __init__(self, model):
        self.model, self.cycle, self.after_ref = model, 0, False

    def __getattr__(self, name):
        def call(*args):
            self.cycle += 1000 if self.after_ref else 100          # tRFC is up to 560 clocks
            self.after_ref = name == "ref"
            return getattr(self.model, name)(self.cycle, *args)
        return call


@pytest.mark.parametrize("grade", GRADES)
def test_data_written_reads_back_across_banks_and_rows(grade):
    model = Ddr4RankModel(grade)
    seq = Sequencer(model)
    # Same bank group and column in different banks and rows: each must keep its own data.
    places = [(0, 0, 1, 0), (0, 0, 2, 0), (0, 1, 1, 0), (3, 3, 65535, 1016), (2, 1, 1, 512)]
    for k, (bg, ba, row, col) in enumerate(places):
        seq.act(bg, ba, row)
        source = burst(k)
        assert seq.wr(bg, ba, col, source) == seq.cycle + model.timing.CWL
        source[:] = 0                                  # the model keeps its own copy
        seq.pre(bg, ba)
    for k, (bg, ba, row, col) in enumerate(places):
        seq.act(bg, ba, row)
        data, data_cycle = seq.rd(bg, ba, col)
        assert data_cycle == seq.cycle + model.timing.CL
        assert np.array_equal(data, burst(k))
        data[:] = 0                                    # ... and hands out copies
        assert np.array_equal(model.peek(bg, ba, row, col), burst(k))
        other_col = col ^ 8                            # the neighbouring burst is unwritten
        assert np.array_equal(seq.rd(bg, ba, other_col)[0], ZEROS)
        seq.pre(bg, ba)
    assert model.violations == []
    assert (model.counters.writes, model.counters.reads) == (5, 10)


def test_load_and_peek_are_a_backdoor_to_the_same_store():
    model = Ddr4RankModel("DDR4-2400", fill=0x5A)
    row_data = np.arange(3 * 64, dtype=np.uint8)
    model.load(1, 2, 300, 8, row_data)                 # bursts at columns 8, 16, 24
    assert np.array_equal(model.peek(1, 2, 300, 8, bursts=3), row_data)
    assert np.all(model.peek(1, 2, 300, 0) == 0x5A)
    assert np.all(model.peek(1, 2, 300, 32) == 0x5A)
    model.load(1, 2, 301, 1016, bytes(range(64)))      # bytes work too, up to the row's end
    seq = Sequencer(model)
    seq.act(1, 2, 300)
    assert np.array_equal(seq.rd(1, 2, 16)[0], row_data[64:128])
    seq.wr(1, 2, 24, burst(9))
    assert np.array_equal(model.peek(1, 2, 300, 24), burst(9))
    assert model.violations == []
    assert model.counters.activates == 1 and model.counters.data_bus_busy_cycles == 8


@pytest.mark.parametrize("call, message", [
    (lambda m: m.act(0, 4, 0, 0), "bg must be an integer in [0, 3], not 4"),
    (lambda m: m.act(0, 0, -1, 0), "ba must be an integer in [0, 3], not -1"),
    (lambda m: m.act(0, 0, 0, 65536), "row must be an integer in [0, 65535], not 65536"),
    (lambda m: m.rd(0, 0, 0, 1024), "col must be an integer in [0, 1016], not 1024"),
    (lambda m: m.rd(0, 0, 0, 4), "col must be a multiple of 8 (the start of a BL8 burst), not 4"),
    (lambda m: m.rd(-1, 0, 0, 0), "cycle must be an integer >= 0, not -1"),
    (lambda m: m.wr(0, 0, 0, 0, bytes(63)), "data must be 64 bytes"),
    (lambda m: m.wr(0, 0, 0, 0, np.zeros(64, np.int32)), "data must be 64 bytes"),
    (lambda m: m.load(0, 0, 0, 1016, bytes(128)), "data must be 1 to 1 whole bursts of 64 bytes"),
    (lambda m: m.load(0, 0, 0, 0, bytes(100)), "data must be 1 to 128 whole bursts"),
    (lambda m: m.peek(0, 0, 0, 1016, bursts=2), "bursts must be an integer in [1, 1], not 2"),
    (lambda m: m.issue(0, "NOP"), "command must be one of ACT, RD, WR, PRE, PREA, REF, not 'NOP'"),
])
def test_bad_arguments_name_the_parameter_and_range(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(Ddr4RankModel("DDR4-2400"))


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="speed grade must be one of DDR4-2400"):
        Ddr4RankModel("DDR4-1600")
    with pytest.raises(ValueError, match=re.escape("fill must be an integer in [0, 255], not 256")):
        Ddr4RankModel(fill=256)
    with pytest.raises(ValueError, match="geometry must be a RankGeometry"):
        Ddr4RankModel(geometry=(4, 4))
    # A SpeedGrade, a Timing and a name give the same model.
    grade = speed_grade("DDR4-3200")
    assert Ddr4RankModel(grade).timing == Ddr4RankModel(grade.timing()).timing == \
        Ddr4RankModel("DDR4-3200").timing


def test_small_geometry_limits_addresses():
    model = Ddr4RankModel("DDR4-2400", RankGeometry(bank_groups=2, banks_per_group=2, rows=16,
                                                    columns=64))
    with pytest.raises(ValueError, match=re.escape("bg must be an integer in [0, 1], not 2")):
        model.act(0, 2, 0, 0)
    with pytest.raises(ValueError, match=re.escape("col must be an integer in [0, 56], not 64")):
        model.rd(0, 0, 0, 64)


def test_hit_miss_conflict_counters():
    model = Ddr4RankModel("DDR4-2400")
    seq = Sequencer(model)
    seq.act(0, 0, 5)
    seq.rd(0, 0, 0)          # miss: the bank was never opened
    seq.rd(0, 0, 8)          # hit
    seq.wr(0, 0, 16, ZEROS)  # hit
    seq.pre(0, 0)
    seq.act(0, 0, 6)
    seq.rd(0, 0, 0)          # conflict: row 5 was closed to open row 6
    seq.rd(0, 0, 0)          # hit
    seq.pre(0, 0)
    seq.act(0, 0, 6)
    seq.rd(0, 0, 0)          # miss: the PRE closed this very row
    seq.act(1, 0, 3)         # an ACT without an access counts no access
    seq.act(2, 0, 3)
    seq.wr(2, 0, 0, ZEROS)   # miss
    seq.prea()               # closes (0,0), (1,0), (2,0)
    seq.act(0, 0, 9)
    seq.rd(0, 0, 0)          # miss: closed by PREA, not for another row
    seq.pre(0, 0)
    seq.ref()
    seq.act(0, 0, 10)
    seq.rd(0, 0, 0)          # miss: refreshed since the PRE of row 9
    seq.pre(3, 3)            # a PRE to a precharged bank is a no-op
    c = model.counters
    assert model.violations == []
    assert (c.reads, c.writes) == (7, 2)
    assert (c.row_hits, c.row_misses, c.row_conflicts) == (3, 5, 1)
    assert c.row_hits + c.row_misses + c.row_conflicts == c.reads + c.writes
    assert (c.activates, c.precharges, c.refreshes) == (7, 6, 1)
    assert c.data_bus_busy_cycles == 9 * 4
    assert c.utilisation(360) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=re.escape("cycles must be an integer >= 1, not 0")):
        c.utilisation(0)


def test_violation_reads_well():
    model = Ddr4RankModel("DDR4-2400")
    model.ref(9 * model.timing.tREFI + 7)
    assert str(model.violations[0]) == (
        "cycle 84247: REF breaks refresh overdue (more than 9 x tREFI since the last REF): "
        "needs at most 84240 clocks, got 84247 (last REF (or start) at cycle 0, tREFI = 9360)")


def test_issue_dispatches_by_name():
    model = Ddr4RankModel("DDR4-2400")
    model.issue(100, "ACT", 0, 0, 4)
    model.issue(200, "WR", 0, 0, 0, burst(3))
    data, cycle = model.issue(300, "RD", 0, 0, 0)
    model.issue(400, "PREA")
    model.issue(500, "REF")
    assert np.array_equal(data, burst(3)) and cycle == 316
    assert model.violations == [] and model.counters.refreshes == 1


def test_earliest_is_the_first_legal_cycle():
    """`earliest` (what the host driver schedules with): a random sequence of commands, each
    at its earliest cycle, breaks no rule; the same command a clock sooner breaks one
    (whenever a timing rule, not the one-command-a-clock rule, set the earliest cycle)."""
    import copy
    import random
    rng = random.Random(7)
    model = Ddr4RankModel("DDR4-2400")
    tight = 0
    for _ in range(400):
        bg, ba = rng.randrange(4), rng.randrange(4)
        row = model.open_row(bg, ba)
        name = rng.choice(["PRE", "RD", "WR"] if row is not None else ["ACT", "ACT", "REF", "PREA"])
        if name == "REF" and any(model.open_row(g, b) is not None for g in range(4) for b in range(4)):
            name = "PREA"
        args = {"ACT": (bg, ba, rng.randrange(64)), "RD": (bg, ba, 0), "WR": (bg, ba, 0),
                "PRE": (bg, ba)}.get(name, ())
        at = model.earliest(name, bg, ba)
        if at - 1 > (model._last_cycle if model._last_cycle is not None else -1):
            early = copy.deepcopy(model)
            early.issue(at - 1, name, *args) if name != "WR" else early.wr(at - 1, bg, ba, 0, bytes(64))
            assert early.violations, (name, at)
            tight += 1
        model.issue(at, name, *args) if name != "WR" else model.wr(at, bg, ba, 0, bytes(64))
        assert not model.violations, model.violations
    assert tight > 200
