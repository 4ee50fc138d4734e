"""BatchPipeline: the ordering and shutdown rules of the inspection agent, with plain coroutines for the
inspection, Kafka delivery and acks (the real broker path is tests/integration/test_pipeline.py and
test_worker_failover.py)."""

import asyncio
import logging

import pytest

from streams.worker.pipeline import BatchPipeline, exit_if_failed


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


def test_a_failed_batch_stops_the_worker_unacked(caplog):
    exits: list[int] = []
    with caplog.at_level(logging.CRITICAL):
        exit_if_failed(_finished("failed"), exit=exits.append)
    assert exits == [70]
    assert "a batch failed before it was acked" in caplog.text and "broker said no" in caplog.text


def test_a_delivered_or_cancelled_batch_does_not_stop_the_worker():
    exits: list[int] = []
    exit_if_failed(_finished("ok"), exit=exits.append)
    exit_if_failed(_finished("cancelled"), exit=exits.append)
    assert exits == []


class Recorder:
    """Inspection that finishes when the test says so; delivery and acks that record their order."""

    def __init__(self, fail_delivery_of: int | None = None):
        self.release: dict[int, asyncio.Event] = {}
        self.delivered: list[int] = []
        self.acked: list[int] = []
        self.failed: list[BaseException] = []
        self.fail_delivery_of = fail_delivery_of

    async def inspect(self, events):
        await self.release.setdefault(events[0], asyncio.Event()).wait()
        return events

    async def deliver(self, outgoing):
        if outgoing[0] == self.fail_delivery_of:
            raise RuntimeError(f"broker refused batch {outgoing[0]}")
        self.delivered.append(outgoing[0])

    async def ack(self, event):
        self.acked.append(event)

    def done(self, task):
        if not task.cancelled() and task.exception() is not None:
            self.failed.append(task.exception())

    def pipeline(self, max_in_flight):
        return BatchPipeline(
            inspect=self.inspect,
            deliver=self.deliver,
            ack=self.ack,
            max_in_flight=max_in_flight,
            on_batch_done=self.done,
        )

    def finish(self, batch):
        self.release.setdefault(batch, asyncio.Event()).set()


def test_batches_are_delivered_and_acked_in_the_order_taken_whatever_order_they_finish_in():
    async def scenario():
        rec = Recorder()
        pipeline = rec.pipeline(max_in_flight=3)
        await pipeline.submit([10, 11])
        await pipeline.submit([20, 21])
        rec.finish(20)  # the second batch is inspected first
        await asyncio.sleep(0.01)
        assert rec.delivered == [] and rec.acked == []  # it waits for the first
        rec.finish(10)
        await pipeline.drain()
        return rec

    rec = asyncio.run(scenario())
    assert rec.delivered == [10, 20]
    assert rec.acked == [10, 11, 20, 21]
    assert rec.failed == []


def test_submit_returns_at_once_until_the_pipeline_is_full():
    async def scenario():
        rec = Recorder()
        pipeline = rec.pipeline(max_in_flight=2)
        await asyncio.wait_for(pipeline.submit([1]), 1)  # room left: returns at once
        third = asyncio.ensure_future(pipeline.submit([2]))  # full: waits for the oldest batch
        await asyncio.sleep(0.01)
        assert not third.done() and len(pipeline) == 2
        rec.finish(1)
        await asyncio.wait_for(third, 1)
        rec.finish(2)
        await pipeline.drain()
        return rec

    rec = asyncio.run(scenario())
    assert rec.acked == [1, 2]


def test_a_failed_batch_leaves_every_later_batch_unacked():
    async def scenario():
        rec = Recorder(fail_delivery_of=1)
        pipeline = rec.pipeline(max_in_flight=3)
        for batch in (0, 1, 2):
            await pipeline.submit([batch])
            rec.finish(batch)
        with pytest.raises(RuntimeError, match="batch 1"):  # the agent turns this into a hard exit
            await pipeline.drain()
        await asyncio.sleep(0.01)  # batch 2 meets batch 1's failure
        return rec

    rec = asyncio.run(scenario())
    assert rec.acked == [0]  # batch 2 was inspected, but never delivered or acked
    assert rec.delivered == [0]
    assert [str(e) for e in rec.failed] == ["broker refused batch 1", "broker refused batch 1"]


def test_a_shutdown_during_a_wait_still_finishes_every_batch():
    async def scenario():
        rec = Recorder()
        pipeline = rec.pipeline(max_in_flight=1)
        agent = asyncio.ensure_future(pipeline.submit([7]))  # waits: one batch fills the pipeline
        await asyncio.sleep(0.01)
        agent.cancel()  # what Faust does to the agent on SIGTERM
        with pytest.raises(asyncio.CancelledError):
            await agent
        assert len(pipeline) == 1  # the batch is still there to be waited for
        drained = asyncio.ensure_future(pipeline.drain())
        await asyncio.sleep(0.01)
        assert not drained.done()
        rec.finish(7)
        await asyncio.wait_for(drained, 1)
        return rec

    rec = asyncio.run(scenario())
    assert rec.acked == [7]


def test_the_oldest_unfinished_batch_tells_its_step_and_when_it_was_taken():
    """What the batch watchdog (streams.worker.batch_watch) reads."""

    class Delivery(Recorder):
        def __init__(self):
            super().__init__()
            self.broker = asyncio.Event()

        async def deliver(self, outgoing):
            await self.broker.wait()
            await super().deliver(outgoing)

    async def scenario():
        rec = Delivery()
        now = [100.0]
        pipeline = BatchPipeline(
            inspect=rec.inspect, deliver=rec.deliver, ack=rec.ack, max_in_flight=2, clock=lambda: now[0]
        )
        assert pipeline.oldest_unfinished() is None and not pipeline.full
        await pipeline.submit([1, 2, 3])
        now[0] = 105.0
        taking = asyncio.ensure_future(pipeline.submit([4]))  # the pipeline is full: the agent waits
        await asyncio.sleep(0.01)
        assert pipeline.full and pipeline.batches_taken == 2
        steps = []
        oldest = pipeline.oldest_unfinished()
        steps.append((oldest.frames, oldest.taken_at, oldest.step))
        rec.finish(1)
        rec.finish(4)
        await asyncio.sleep(0.01)
        steps.append(pipeline.oldest_unfinished().step)  # batch 1 waits for Kafka, batch 4 for batch 1
        rec.broker.set()
        await asyncio.wait_for(taking, 1)
        await pipeline.drain()
        steps.append(pipeline.oldest_unfinished())
        await pipeline.submit([5])
        rec.finish(5)
        await asyncio.sleep(0.01)
        steps.append(len(pipeline))  # done and acked: a worker waiting for input, though still queued until the next
        return steps

    assert asyncio.run(scenario()) == [(3, 100.0, "inspection"), "delivery", None, 0]


def test_max_in_flight_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Recorder().pipeline(max_in_flight=0)
