"""Dataset sink against the real broker: samples become an ImageFolder tree `defectstream train` can read."""

import base64
import json
import time

import cv2
import numpy as np
import pytest
from confluent_kafka import Producer

from models import data as ds
from schemas.records import RetrainingSample
from streams.dataset_sink import MANIFEST, DatasetSink
from streams.kafka import topics
from streams.kafka.config import producer_config

pytestmark = pytest.mark.integration


def _sample(part, label, image, content_type="image/jpeg", raw_shape=None):
    return RetrainingSample(
        part_id=part,
        line_id="line-1",
        camera_id="cam-1",
        capture_ts_ns=time.time_ns(),
        content_type=content_type,
        raw_shape=raw_shape,
        image_b64=base64.b64encode(image).decode(),
        model_version="m1",
        label=label,
        confidence=0.42,
        top_k=[{"label": label, "probability": 0.42}],
        decision="review",
        selected_because=["low_confidence", "review"],
    )


def test_samples_land_as_an_imagefolder_with_a_manifest(kafka_settings, tmp_path):
    jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
    raw = np.full((8, 10, 1), 200, np.uint8)
    samples = [
        _sample("p-1", "scratch", jpeg),
        _sample("p-2", "ok", jpeg),
        _sample("../p-3", "scratch", raw.tobytes(), "image/x-raw", "8x10x1"),
        _sample("p-1", "scratch", jpeg),  # re-delivered: written once
    ]
    producer = Producer(producer_config(kafka_settings))
    topic = kafka_settings.topic(topics.RETRAINING_SAMPLES)
    for s in samples:
        producer.produce(topic, s.to_json(), key=s.part_id.encode())
    producer.produce(topic, b"not a sample", key=b"x")
    assert producer.flush(10) == 0

    out = tmp_path / "dataset"
    sink = DatasetSink(kafka_settings, out)
    deadline = time.monotonic() + 30
    while sink.stats.written + sink.stats.duplicates + sink.stats.unreadable < 5 and time.monotonic() < deadline:
        sink.poll(0.5)
    sink.consumer.close()
    assert (sink.stats.written, sink.stats.duplicates, sink.stats.unreadable) == (3, 1, 1)
    assert (out / "scratch" / "p-1.jpg").read_bytes() == jpeg
    png = cv2.imread(str(out / "scratch" / "_p-3.png"), cv2.IMREAD_GRAYSCALE)  # path separators neutralised
    assert png.shape == (8, 10) and int(png.mean()) == 200
    manifest = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    by_part = {m["part_id"]: m for m in manifest}
    assert len(manifest) == 3 and set(by_part) == {"p-1", "p-2", "../p-3"}
    assert by_part["p-1"]["path"] == "scratch/p-1.jpg" and by_part["p-1"]["label"] is None
    assert by_part["p-1"]["selected_because"] == ["low_confidence", "review"]
    # What training reads: every image, labelled by its folder.
    found = sorted((r.label, r.path.rsplit("/", 1)[-1]) for r in ds.discover(out))
    assert found == [("ok", "p-2.jpg"), ("scratch", "_p-3.png"), ("scratch", "p-1.jpg")]
    # A restarted sink knows what it already wrote.
    again = DatasetSink(kafka_settings, out, group_id="another-group")
    assert again.write(samples[0]) is None
    again.consumer.close()
