"""deliver_outputs: the retry and give-up rules of a batch's delivery, with a scripted producer (the real
librdkafka path is tests/streams/kafka/test_output_producer.py and the integration tests)."""

import asyncio
import dataclasses
import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.inspection import Outgoing
from streams.kafka import topics
from streams.kafka.output_producer import ProducerFailed
from streams.worker.delivery import deliver_outputs
from tests.schemas.examples import EXAMPLES
from tests.streams.frames import flat_jpeg, incoming_frame, make_inspector

TOPICS = {
    role: f"t.{role}"
    for role in (topics.RESULTS, topics.REJECT_COMMANDS, topics.DEAD_LETTERS, topics.RETRAINING_SAMPLES)
}


class ScriptedProducer:
    """Each deliver() call takes the next script entry: the values to refuse (a set, refused with a RuntimeError, or a
    dict of value -> the error), or an exception to raise, or "hang" (never answer). Past the script every record is
    accepted."""

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
        if isinstance(step, dict):
            return [step.get(value) for _topic, _key, value in records]
        return [RuntimeError("refused") if value in step else None for _topic, _key, value in records]


def _outgoing():
    """Two defective parts: a result and a reject command each, results first as the inspector builds them."""
    outgoing = make_inspector().inspect(
        [incoming_frame("p1", flat_jpeg(30)), incoming_frame("p2", flat_jpeg(30), offset=1)]
    )
    assert sorted(o.role for o in outgoing) == sorted([topics.RESULTS] * 2 + [topics.REJECT_COMMANDS] * 2)
    return outgoing


def _sample(part_id: str) -> Outgoing:
    return Outgoing(
        topics.RETRAINING_SAMPLES, b"l", dataclasses.replace(EXAMPLES["retraining_sample"], part_id=part_id)
    )


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


TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)


def test_a_retraining_sample_kafka_refuses_for_good_is_dropped_and_the_batch_goes_on(caplog):
    """A sample larger than the topic allows (a topic made with a 1 MB limit, a larger camera) would otherwise be
    retried until the deadline and stop the worker, and the restarted worker would meet the same batch: inspection
    held hostage by best-effort data collection. Refused by the broker or by the producer itself, it is dropped."""
    for refusal in (TOO_LARGE, KafkaException(TOO_LARGE)):
        outgoing = _outgoing()
        sample = _sample("p1")
        producer = ScriptedProducer({sample.value: refusal})
        dropped: list = []
        with caplog.at_level(logging.WARNING):
            exits = _run(producer, [*outgoing, sample], on_dropped=lambda o, why, into=dropped: into.append((o, why)))
        assert exits == []
        assert dropped == [(sample, "MSG_SIZE_TOO_LARGE")]
        assert len(producer.calls) == 1  # nothing sent again: the sample was the only one of its topic
    assert "not delivered" not in caplog.text


def test_samples_refused_together_are_each_sent_alone_before_one_is_dropped():
    """librdkafka refuses a produce batch as a whole and does not split it: two samples that each fit the topic's
    limit can be refused together. Each is sent once on its own; only one refused on its own is dropped."""
    fits, too_large = _sample("p1"), _sample("p2")
    producer = ScriptedProducer({fits.value: TOO_LARGE, too_large.value: TOO_LARGE}, {}, {too_large.value: TOO_LARGE})
    dropped = []
    assert _run(producer, [*_outgoing(), fits, too_large], on_dropped=lambda o, why: dropped.append(o)) == []
    assert dropped == [too_large]
    topic = TOPICS[topics.RETRAINING_SAMPLES]
    assert producer.calls[1:] == [[(topic, fits.value)], [(topic, too_large.value)]]


def test_only_samples_are_dropped_and_only_for_a_refusal_no_retry_can_change():
    """A verdict or a command refused for good still holds the batch (the worker stops unacked at the deadline, as
    for any undeliverable record); a sample refused for a passing reason is sent again."""
    outgoing = _outgoing()
    result = next(o for o in outgoing if o.role == topics.RESULTS)
    sample = _sample("p1")
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    producer = ScriptedProducer({result.value: TOO_LARGE, sample.value: timed_out})
    dropped = []
    assert _run(producer, [*outgoing, sample], on_dropped=lambda o, why: dropped.append(o)) == []
    assert dropped == []
    assert producer.calls[1] == [
        (TOPICS[topics.RESULTS], result.value),
        (TOPICS[topics.RETRAINING_SAMPLES], sample.value),
    ]

    producer = ScriptedProducer(*[{result.value: TOO_LARGE}] * 10)
    assert _run(producer, outgoing, deadline_s=0.0) == [70]
