"""The host memory-controller driver on its own (verif/host_driver.py): the spacing it keeps on
the host's data bus, where the buffer brings read data later than a bare rank, and the
check that catches a bus the scheduling failed to keep."""
from refree.hw.ddr4 import RankGeometry, speed_grade
from refree.hw.ddr4.commands import decode
from refree.hw.lrdimm.lrdimm_nmp import READ_LATENCY_ADDED
from refree.hw.lrdimm.regmap import WindowParams
from refree.verif.host_driver import HostDriver

TIMING = speed_grade("DDR4-2400").timing()


def drain(driver, limit=20_000):
    """Clock the driver until it is idle, answering each read when it is due; the column
    commands it issued, as (cycle, rank, name)."""
    issued = []
    for cycle in range(limit):
        if driver.idle:
            return issued
        rank, pins, _, _ = driver.tick(cycle)
        driver.receive(cycle, bool(driver.reads) and driver.reads[0][0] == cycle, 0)
        if pins is not None and decode(pins)[0] in ("RD", "WR"):
            issued.append((cycle, rank, decode(pins)[0]))
    raise AssertionError("the driver did not finish")


def test_a_write_after_a_read_waits_for_the_buffers_read_latency():
    """RD then WR to open rows of one rank, and of two ranks: the WR goes rd_to_wr +
    READ_LATENCY_ADDED after the RD (on a bare rank rd_to_wr would do), and neither the
    rank models nor the bus check object."""
    for ranks, second in ((1, 0), (2, 1)):
        driver = HostDriver(TIMING, RankGeometry(), ranks, WindowParams())
        driver.access(False, second, 0, 0, 7, 16)          # (opens the row of the WR)
        driver.access(False, 0, 0, 0, 7, 0)
        driver.access(True, second, 0, 0, 7, 8, data=5)
        *_, (rd, _, _), (wr, _, _) = drain(driver)
        assert wr - rd == TIMING.rd_to_wr + READ_LATENCY_ADDED
        assert not driver.errors and not driver.violations


def test_reads_of_two_ranks_leave_a_clock_between_their_bursts():
    driver = HostDriver(TIMING, RankGeometry(), 2, WindowParams())
    for _ in range(2):          # (the second time both rows are open)
        driver.access(False, 0, 0, 0, 7, 0)
        driver.access(False, 1, 1, 0, 7, 0)
    *_, (a, _, _), (b, _, _) = drain(driver)
    assert b - a == TIMING.burst_clocks + 1
    assert not driver.errors


def test_the_bus_check_catches_a_write_too_close_to_a_read():
    """A WR only a bare rank's rd_to_wr after a RD, and a read of another rank with no
    clock between the bursts: the check reports both."""
    from refree.verif.host_driver import Access
    driver = HostDriver(TIMING, RankGeometry(), 2, WindowParams())
    driver._check_bus(0, Access(False, 0, 0, 0, 7, 0))
    driver._check_bus(TIMING.rd_to_wr, Access(True, 0, 0, 0, 7, 8))
    assert driver.errors == [f"cycle {TIMING.rd_to_wr}: host data bus: the WR's data 0 clocks "
                             f"after the last burst, 2 needed"]
    driver = HostDriver(TIMING, RankGeometry(), 2, WindowParams())
    driver._check_bus(0, Access(False, 0, 0, 0, 7, 0))
    driver._check_bus(TIMING.burst_clocks, Access(False, 1, 0, 0, 7, 0))
    assert len(driver.errors) == 1 and "1 needed" in driver.errors[0]
