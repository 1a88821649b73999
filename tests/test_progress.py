"""ByteProgress logs done / total GB and the rate, so non-interactive (batch) logs show progress."""

import logging

from factory.progress import ByteProgress


def test_log_lines_carry_done_total_and_rate(caplog):
    caplog.set_level(logging.INFO, logger="factory.progress")
    progress = ByteProgress("write iter_0000000", total_bytes=4 * 10**9, every_s=0.0)
    progress.advance(10**9)
    progress.advance(10**9)
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].startswith("write iter_0000000: 2.00 / 4.00 GB (") and lines[-1].endswith("GB/s)")
    assert len(lines) == 2
