"""Worker-side test doubles: an engine with fixed answers, frames as the worker receives them, tiny JPEGs."""

import time

import cv2
import numpy as np

from schemas.frame import FrameMeta, headers_to_dict
from streams.inspection import FrameInspector, IncomingFrame
from streams.policy import DecisionPolicy


class FixedEngine:
    """Answers by the image's mean brightness, so tests control verdicts: bright -> ok 0.9, mid -> scratch 0.55
    (unsure), dark -> scratch 0.8."""

    def __init__(self, version="fixed-1", class_names=("ok", "scratch")):
        self.class_names = list(class_names)
        self.input_size = 16
        self.mean = [0.0, 0.0, 0.0]
        self.std = [1 / 255, 1 / 255, 1 / 255]
        self.version = version
        self.name = "fixed"
        self.model_name = "fixednet"
        self.precision = "fp32"
        self.device = "cpu"
        self.concurrent_batches = 1

    def predict(self, batch):
        level = batch.mean(axis=(1, 2, 3))
        p_ok = np.where(level > 160, 0.9, np.where(level > 80, 0.45, 0.2))
        return np.stack([p_ok, 1 - p_ok], axis=1)


def make_inspector(engine=None, thresholds="0.6", **kw):
    engine = engine or FixedEngine()
    return FrameInspector(engine, decisions=DecisionPolicy.from_spec("ok", thresholds), worker_id="w1", **kw)


def incoming_frame(part: str, value: bytes | None, offset: int = 0, capture: int | None = None, **header_overrides):
    capture = time.time_ns() if capture is None else capture
    headers = headers_to_dict(FrameMeta(part_id=part, line_id="L1", camera_id="C1", capture_ts_ns=capture).to_headers())
    headers.update(header_overrides)
    headers = {k: v for k, v in headers.items() if v is not None}
    return IncomingFrame(value, headers, "t.frames", 0, offset, received_ts_ns=capture + 1_000_000)


def flat_jpeg(level: int, size: int = 24) -> bytes:
    return cv2.imencode(".jpg", np.full((size, size, 3), level, np.uint8))[1].tobytes()
