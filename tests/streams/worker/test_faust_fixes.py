"""Faust's gap marking (offsets it will commit as consumed without delivering them) is logged, never silent."""

import asyncio
import logging
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from streams.worker.app import log_offset_gaps


def test_faust_gap_marking_is_logged_and_still_applied(caplog):
    log_offset_gaps()
    log_offset_gaps()  # installing twice must not wrap twice (one line per gap)
    consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None, {"tp": 9}), _gap=defaultdict(IntervalTree))
    with caplog.at_level(logging.WARNING, logger="streams.worker.app"):
        asyncio.run(Consumer._add_gap(consumer, "tp", 10, 15))
    assert caplog.text.count("as a gap") == 1
    assert "offsets 10..15 of tp as a gap (committed 9)" in caplog.text
    assert consumer._gap["tp"].overlaps(10, 16)  # Faust's own bookkeeping is unchanged
