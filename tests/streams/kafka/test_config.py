from streams.kafka.config import consumer_config, gate_consumer_config
from streams.settings import Settings

SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:9092")


def test_edge_consumers_long_poll_and_are_answered_on_the_first_byte():
    config = consumer_config(SETTINGS, "reader")
    assert config["fetch.min.bytes"] == 1
    assert config["fetch.wait.max.ms"] >= 100


def test_the_gate_polls_briefly_but_not_constantly_and_stores_offsets_only_when_told():
    # A fresh gate's partitions are assigned one after another; with a long poll in flight the later ones wait for
    # it, and `make demo` saw its first commands miss their deadline at 500 ms: the wait must stay a small part of
    # the 200 ms budget (the bench's; the default line travel time is 500 ms). But every wait is a fetch
    # request while the gate is idle: 10 ms was ~100 a second per gate.
    config = gate_consumer_config(SETTINGS, "gate")
    assert 50 <= config["fetch.wait.max.ms"] <= 200 / 4
    assert config["fetch.min.bytes"] == 1
    assert config["enable.auto.offset.store"] is False
    assert config["group.id"] == "gate"
