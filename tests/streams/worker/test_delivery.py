"""deliver_outputs: the retry and give-up rules of a batch's delivery, with a scripted producer (the real
librdkafka path is tests/streams/kafka/test_output_producer.py and the integration tests)."""

import asyncio
import logging

import pytest

from streams.kafka import topics
from streams.kafka.output_producer import ProducerFailed
from streams.worker.delivery import deliver_outputs
from tests.streams.test_inspection import _frame, _inspector, _jpeg

TOPICS = {role: f"t.{role}" for role in (topics.RESULTS, topics.REJECT_COMMANDS, topics.DEAD_LETTERS)}


class ScriptedProducer:
    """Each deliver() call takes the next script entry: the values to refuse, or an exception to raise, or "hang"
    (never answer). Past the script every record is accepted."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls: list[list[tuple[str, bytes]]] = []

    async def deliver(self, records):
        self.calls.append([(topic, value) for topic, _key, value in records])
        step = self.script.pop(0) if self.script else set()
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await asyncio.Event().wait()
        return [RuntimeError("refused") if value in step else None for _topic, _key, value in records]


def _outgoing():
    """Two defective parts: a result and a reject command each, results first as the inspector builds them."""
    outgoing = _inspector().inspect([_frame("p1", _jpeg(30)), _frame("p2", _jpeg(30), offset=1)])
    assert sorted(o.role for o in outgoing) == sorted([topics.RESULTS] * 2 + [topics.REJECT_COMMANDS] * 2)
    return outgoing


def _run(producer, outgoing, **kw):
    exits: list[int] = []
    asyncio.run(deliver_outputs(producer, TOPICS, outgoing, exit=exits.append, **kw))
    return exits


def test_commands_go_first_and_one_call_is_enough_when_kafka_takes_everything():
    producer = ScriptedProducer()
    assert _run(producer, _outgoing()) == []
    assert len(producer.calls) == 1
    sent = [topic for topic, _ in producer.calls[0]]
    assert sent == [TOPICS[topics.REJECT_COMMANDS]] * 2 + [TOPICS[topics.RESULTS]] * 2


def test_only_the_refused_records_are_sent_again(caplog):
    outgoing = _outgoing()
    refused = next(o.value for o in outgoing if o.role == topics.RESULTS)
    producer = ScriptedProducer({refused}, {refused})
    with caplog.at_level(logging.WARNING):
        assert _run(producer, outgoing) == []
    assert [len(call) for call in producer.calls] == [4, 1, 1]
    assert producer.calls[1] == producer.calls[2] == [(TOPICS[topics.RESULTS], refused)]
    assert "1 of 4 records not delivered (refused)" in caplog.text


def test_records_still_refused_at_the_deadline_stop_the_worker_unacked(caplog):
    outgoing = _outgoing()
    producer = ScriptedProducer(*[{o.value for o in outgoing}] * 10)
    with caplog.at_level(logging.CRITICAL):
        assert _run(producer, outgoing, deadline_s=0.0) == [70]
    assert len(producer.calls) == 1
    assert "4 records undeliverable" in caplog.text


def test_a_producer_that_never_answers_stops_the_worker_unacked():
    assert _run(ScriptedProducer("hang"), _outgoing(), deadline_s=0.0) == [70]


def test_a_producer_that_failed_for_good_is_not_retried():
    producer = ScriptedProducer(ProducerFailed("fatal"))
    with pytest.raises(ProducerFailed):
        _run(producer, _outgoing())
    assert len(producer.calls) == 1
