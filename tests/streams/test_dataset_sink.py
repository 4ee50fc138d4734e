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
from streams.dataset_sink import MANIFEST, DatasetSink, ManifestError, part_file_stem
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
        _sample("LOT7_0001", "scratch", jpeg),
        _sample("LOT7/0001", "scratch", cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()),
    ]
    unreadable = [
        b"not a sample",
        b"[" * 3000,  # nested too deeply for json: RecursionError, not a crash
        _sample("p-8", "scratch", jpeg).to_json().replace(b'"image_b64":"', b'"image_b64":"!!'),  # not base64
        _sample("p-9", "scratch", raw.tobytes(), "image/x-raw", "8x11x1").to_json(),  # shape does not fit the bytes
        _sample("p-10", "scratch", raw.tobytes(), "image/x-raw", None).to_json(),
    ]
    producer = Producer(producer_config(kafka_settings))
    topic = kafka_settings.topic(topics.RETRAINING_SAMPLES)
    for s in samples:
        producer.produce(topic, s.to_json(), key=s.part_id.encode())
    for value in unreadable:
        producer.produce(topic, value, key=b"x")
    assert producer.flush(10) == 0

    out = tmp_path / "dataset"
    sink = DatasetSink(kafka_settings, out)
    deadline = time.monotonic() + 30
    total = len(samples) + len(unreadable)
    while sink.stats.written + sink.stats.duplicates + sink.stats.unreadable < total and time.monotonic() < deadline:
        sink.poll(0.5)
    sink.consumer.close()
    assert (sink.stats.written, sink.stats.duplicates, sink.stats.unreadable) == (5, 1, 5)
    assert (out / "scratch" / "p-1.jpg").read_bytes() == jpeg
    p3 = part_file_stem("../p-3")
    assert p3.startswith("_p-3-") and "/" not in p3  # path separators neutralised
    png = cv2.imread(str(out / "scratch" / f"{p3}.png"), cv2.IMREAD_GRAYSCALE)
    assert png.shape == (8, 10) and int(png.mean()) == 200
    manifest = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    by_part = {m["part_id"]: m for m in manifest}
    assert len(manifest) == 5 and set(by_part) == {"p-1", "p-2", "../p-3", "LOT7_0001", "LOT7/0001"}
    assert by_part["p-1"]["path"] == "scratch/p-1.jpg" and by_part["p-1"]["label"] is None
    assert by_part["p-1"]["selected_because"] == ["low_confidence", "review"]
    # Ids that are the same once made safe keep files of their own.
    assert by_part["LOT7_0001"]["path"] == "scratch/LOT7_0001.jpg"
    assert by_part["LOT7/0001"]["path"] != by_part["LOT7_0001"]["path"]
    assert (out / by_part["LOT7_0001"]["path"]).read_bytes() == jpeg
    assert (out / by_part["LOT7/0001"]["path"]).read_bytes() != jpeg
    # What training reads: every image, labelled by its folder.
    found = sorted((r.label, r.path.rsplit("/", 1)[-1]) for r in ds.discover(out))
    assert found == sorted(
        [("ok", "p-2.jpg"), ("scratch", f"{p3}.png"), ("scratch", "p-1.jpg")]
        + [("scratch", by_part[p]["path"].rsplit("/", 1)[-1]) for p in ("LOT7_0001", "LOT7/0001")]
    )
    assert not list(out.rglob("*.tmp"))
    # A restarted sink knows what it already wrote.
    again = DatasetSink(kafka_settings, out, group_id="another-group")
    assert again.write(samples[0]) is None
    again.consumer.close()


def test_a_manifest_line_cut_short_by_a_crash_is_cut_off_and_a_broken_one_is_named(kafka_settings, tmp_path, caplog):
    out = tmp_path / "dataset"
    out.mkdir()
    whole = json.dumps({"path": "ok/p-1.jpg", "part_id": "p-1", "label": None})
    (out / MANIFEST).write_text(whole + "\n" + '{"path": "ok/p-2.jpg", "part_i')  # the append a power cut stopped
    sink = DatasetSink(kafka_settings, out)
    sink.consumer.close()
    assert "unfinished last line" in caplog.text
    assert (out / MANIFEST).read_text() == whole + "\n"  # the next entry starts on a line of its own
    assert sink.write(_sample("p-1", "ok", b"x")) is None  # still known
    jpeg = cv2.imencode(".jpg", np.full((8, 8, 3), 9, np.uint8))[1].tobytes()
    assert sink.write(_sample("p-2", "ok", jpeg)) == out / "ok" / "p-2.jpg"  # re-delivered, now stored
    assert [json.loads(line)["part_id"] for line in (out / MANIFEST).read_text().splitlines()] == ["p-1", "p-2"]

    (out / MANIFEST).write_text(whole + "\n" + "{label edited by hand\n" + whole + "\n")
    with pytest.raises(ManifestError, match="line 2 is not a manifest entry"):
        DatasetSink(kafka_settings, out)
