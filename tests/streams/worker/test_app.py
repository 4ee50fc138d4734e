import asyncio
import logging

import pytest

from streams.settings import Settings
from streams.worker.app import check_pipeline_limits, exit_if_failed


def _finished(outcome: str) -> asyncio.Future:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        if outcome == "ok":
            future.set_result(None)
        elif outcome == "cancelled":
            future.cancel()
        else:
            future.set_exception(RuntimeError("broker said no"))
        return future
    finally:
        loop.close()


def test_a_failed_delivery_stops_the_worker_unacked(caplog):
    exits: list[int] = []
    with caplog.at_level(logging.CRITICAL):
        exit_if_failed(_finished("failed"), exit=exits.append)
    assert exits == [70]
    assert "delivering a batch failed" in caplog.text and "broker said no" in caplog.text


def test_a_delivered_or_cancelled_batch_does_not_stop_the_worker():
    exits: list[int] = []
    exit_if_failed(_finished("ok"), exit=exits.append)
    exit_if_failed(_finished("cancelled"), exit=exits.append)
    assert exits == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"max_wait_s": 0.0}, "max_wait_s must be above 0"),
        ({"max_batches_in_flight": 0}, "max_batches_in_flight must be at least 1"),
    ],
)
def test_batch_limits_the_agent_cannot_work_with_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        check_pipeline_limits(Settings().replace(**change))
    check_pipeline_limits(Settings())  # the defaults pass
