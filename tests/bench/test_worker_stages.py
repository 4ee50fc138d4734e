import asyncio

import pytest

from bench.worker_stages import incoming, inspector_for, results_of, time_layout
from streams.inspection import FrameInspector
from streams.worker.stages import InspectionStages
from tests.streams.frames import FixedEngine, flat_jpeg


def test_every_timed_frame_comes_back_as_one_result():
    stages = InspectionStages(inspector_for(FixedEngine()), decode_threads=2)
    row = asyncio.run(time_layout(stages, [flat_jpeg(220), flat_jpeg(30)], batch=4, seconds=0.3))
    stages.shutdown()
    assert row["frames"] > 0
    assert (
        row["threads"] == {"decode": 2, "infer": 1, "decide": 1} and row["in_flight"] == 8
    )  # two per stage thread, as the worker needs
    assert row["frames_per_s"] > 0 and row["decode_busy"] > 0 and row["inference_busy"] > 0


def test_a_frame_without_a_result_fails_the_run():
    inspector: FrameInspector = inspector_for(FixedEngine())
    outgoing = inspector.inspect(incoming([flat_jpeg(220), b"not an image"], 2))
    with pytest.raises(RuntimeError, match="2 frames gave 1 results"):
        results_of(outgoing, 2)
    assert len(results_of(inspector.inspect(incoming([flat_jpeg(220)], 3)), 3)) == 3
