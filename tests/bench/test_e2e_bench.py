import os
import threading

import pytest

from bench import e2e_bench
from bench.e2e_bench import (
    bare_summary,
    bare_throughput,
    cpu_ceiling,
    cpu_seconds,
    get_args_parser,
    jit_seconds,
    lower_median,
    median_burst,
    pair_bursts_with_bare,
    worker_settings,
)
from models import preprocess
from streams.inspection import FrameInspector
from streams.kafka import topics
from streams.settings import Settings
from tests.streams.frames import FixedEngine, flat_jpeg, incoming_frame


def test_cpu_ceiling_is_the_rate_the_cores_can_pay_for():
    bare = {"frames_per_s": 200.0, "cpu_ms_per_frame": 8.0}
    burst = {"frames": 100, "cpu_s": {"worker": 1.0, "bench (camera, gate, reader)": 0.2, "kafka broker": 0.3}}
    ceiling = cpu_ceiling(bare, burst, cores=2)
    # 15 CPU-ms per frame: two cores carry 133 frames/s; a worker costing only the bare 8 ms: 2000 / 13 = 154.
    assert ceiling["cpu_ms_per_frame"] == pytest.approx(15.0)
    assert ceiling["frames_per_s"] == pytest.approx(2000 / 15)
    assert ceiling["over_bare"] == pytest.approx(2000 / 15 / 200)
    assert ceiling["zero_overhead_worker_over_bare"] == pytest.approx(2000 / 13 / 200)


def test_cpu_ceiling_needs_the_worker_cpu():
    assert cpu_ceiling({"frames_per_s": 1.0, "cpu_ms_per_frame": 1.0}, {"frames": 10, "cpu_s": {}}, cores=2) is None


@pytest.mark.parametrize("level", [220, 120, 30])  # sure ok, unsure, sure defect
def test_bench_worker_sends_every_frame_to_the_gate_and_samples_none(level, tmp_path):
    args = get_args_parser().parse_args(["--model", str(tmp_path / "model")])
    engine = FixedEngine()
    settings = worker_settings(Settings(), args, engine.class_names, "r1")
    outgoing = FrameInspector.from_settings(engine, settings).inspect([incoming_frame("p1", flat_jpeg(level))])
    roles = sorted(o.role for o in outgoing)
    assert roles == sorted([topics.RESULTS, topics.REJECT_COMMANDS])  # a command for every frame, no sample
    assert [o.record.decision for o in outgoing if o.role == topics.RESULTS] == ["review"]


def test_jit_seconds_finds_the_brokers_compiler_threads(kafka):
    if kafka.local is None:
        pytest.skip("an external cluster has no local JVM to look at")
    # A broker that has started has compiled its start-up paths: its compiler threads have used some CPU, and
    # never more than the whole process.
    jit = jit_seconds(kafka.local.pid)
    assert 0 < jit <= cpu_seconds(kafka.local.pid)


def test_worker_cores_are_parsed_and_checked():
    allowed = sorted(os.sched_getaffinity(0))
    assert e2e_bench.parse_cores("") == set()
    if len(allowed) > 1:
        assert e2e_bench.parse_cores(f"{allowed[0]}") == {allowed[0]}
        assert e2e_bench.parse_cores(f" {allowed[0]}-{allowed[0]} ,") == {allowed[0]}
    with pytest.raises(ValueError, match="not available"):
        e2e_bench.parse_cores(str(max(allowed) + 1))
    with pytest.raises(ValueError, match="no core for the broker"):
        e2e_bench.parse_cores(",".join(map(str, allowed)))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_threads_started_on_worker_cores_stay_there_and_the_caller_gets_its_cores_back():
    before = os.sched_getaffinity(0)
    core = {min(before)}
    seen = []
    with e2e_bench.on_cores(core):
        thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        thread.start()
        thread.join()
        assert os.sched_getaffinity(0) == core
    assert seen == [core]
    assert os.sched_getaffinity(0) == before


def test_the_median_burst_is_the_max_rate():
    bursts = [
        {"tag": "a", "sustained_fps": 300.0},
        {"tag": "b", "sustained_fps": 250.0},
        {"tag": "c", "sustained_fps": 400.0},
    ]
    assert median_burst(bursts)["tag"] == "a"
    # An even count takes the lower middle one: never the better of two.
    assert median_burst(bursts[:2])["tag"] == "b"
    assert median_burst(bursts[2:])["tag"] == "c"
    with pytest.raises(ValueError, match="no burst"):
        median_burst([])


def slot(one_loop: float, overlapped: float, cpu_ms: float = 10.0, given_back: float = 1.0) -> dict:
    return {
        "given_back": given_back,
        **{
            kind: {"engine": "e", "batch": 8, "frames_per_s": fps, "cpu_ms_per_frame": cpu_ms, "cores_busy": 2.0}
            for kind, fps in (("one_loop", one_loop), ("overlapped", overlapped))
        },
    }


def test_each_burst_is_compared_with_the_bare_engine_just_before_and_after_it():
    # The machine slows down between the first two bare measurements and recovers after the second burst: a burst
    # is judged against the machine it ran on, not one minutes away.
    slots = [slot(150, 140, 12.0), slot(100, 90, 18.0), slot(150, 140, 12.0)]
    bursts = [{"sustained_fps": 100.0}, {"sustained_fps": 110.0}]
    pair_bursts_with_bare(bursts, slots)
    assert bursts[0]["bare_beside"]["one_loop"] == {"frames_per_s": 125.0, "cpu_ms_per_frame": 15.0}
    assert bursts[0]["ratio"]["one_loop"] == pytest.approx(100 / 125)
    assert bursts[0]["ratio"]["overlapped"] == pytest.approx(100 / 115)
    assert bursts[1]["ratio"]["one_loop"] == pytest.approx(110 / 125)
    with pytest.raises(ValueError, match="2 bursts need 3 bare measurements around them, not 2"):
        pair_bursts_with_bare(bursts, slots[:2])


def test_the_cores_the_idle_pipeline_took_from_the_bare_engine_are_given_back():
    # The idle broker and worker took 0.1 of 2 cores during the second measurement: the bare engine could have done
    # 2 / 1.9 as much, and the burst is judged against that, not against a bare engine they slowed.
    bursts = [{"sustained_fps": 100.0}]
    pair_bursts_with_bare(bursts, [slot(120, 120), slot(114, 95, given_back=2 / 1.9)])
    assert bursts[0]["bare_beside"]["one_loop"]["frames_per_s"] == pytest.approx(120.0)
    assert bursts[0]["bare_beside"]["overlapped"]["frames_per_s"] == pytest.approx((120 + 100) / 2)
    assert bursts[0]["ratio"]["one_loop"] == pytest.approx(100 / 120)


def test_the_ratio_that_counts_is_the_lower_median():
    assert lower_median([0.9, 0.7, 0.8]) == 0.8
    assert lower_median([0.9, 0.7]) == 0.7  # never the better of two
    with pytest.raises(ValueError, match="no value"):
        lower_median([])


def test_the_bare_summary_averages_the_slots_and_keeps_their_range():
    summary = bare_summary([slot(150, 140, 12.0), slot(100, 90, 18.0), slot(110, 100, 15.0)], "one_loop")
    assert summary["frames_per_s"] == pytest.approx(120.0)
    assert summary["cpu_ms_per_frame"] == pytest.approx(15.0)
    assert summary["range_frames_per_s"] == [100, 150]
    assert (summary["engine"], summary["batch"]) == ("e", 8)
    assert "cores_busy" not in summary  # a figure of one measurement, kept in the slots


def test_bursts_below_one_are_refused(tmp_path):
    args = get_args_parser().parse_args(["--model", str(tmp_path / "model"), "--bursts", "0"])
    with pytest.raises(ValueError, match="--bursts must be at least 1"):
        e2e_bench.main(args)


def test_decode_threads_reach_the_worker_and_the_overlapped_bare_engine(tmp_path, monkeypatch):
    args = get_args_parser().parse_args(["--model", str(tmp_path / "model"), "--decode-threads", "3"])
    assert worker_settings(Settings(), args, ["ok"], "r1").decode_threads == 3
    monkeypatch.setattr(e2e_bench, "load_engine", lambda *a, **kw: FixedEngine())
    decoders: set[int] = set()
    decode = preprocess.decode_image

    def counted(*a, **kw):
        decoders.add(threading.get_ident())
        return decode(*a, **kw)

    monkeypatch.setattr(e2e_bench, "decode_image", counted)
    frames = [flat_jpeg(level) for level in (30, 120, 220)]
    overlapped = bare_throughput(tmp_path, "auto", 1, 4, frames, overlap_decode=True, decode_threads=3, seconds=0.3)
    assert overlapped["decode_threads"] == 3 and overlapped["frames_per_s"] > 0
    # The three decoders and the warm-up in this thread; one lane that decodes for itself without overlap.
    assert len(decoders) == 4
    decoders.clear()
    one_loop = bare_throughput(tmp_path, "auto", 1, 4, frames, decode_threads=3, seconds=0.3)
    assert "decode_threads" not in one_loop and len(decoders) == 2


def test_several_workers_count_as_one_role_and_none_is_refused(tmp_path):
    me = os.getpid()
    pids = {"worker": (me, me), "bench (camera, gate, reader)": (me,)}
    cpu = e2e_bench.role_cpu_seconds(pids)
    # The same process counted twice: the role's CPU is the sum over its processes. The reads are microseconds apart
    # but may straddle a clock tick; this test process has used seconds of CPU by now, so one tick cannot pass for it.
    assert cpu["bench (camera, gate, reader)"] > 1.0
    assert cpu["worker"] == pytest.approx(2 * cpu["bench (camera, gate, reader)"], abs=0.05)
    for flag in ("--workers", "--decode-threads"):
        args = get_args_parser().parse_args(["--model", str(tmp_path / "model"), flag, "0"])
        with pytest.raises(ValueError, match=flag):
            e2e_bench.main(args)


def test_idle_means_under_a_tenth_of_a_core_per_worker_and_each_worker_under_it_alone():
    one = {"worker": (1,), "kafka broker": (2,)}
    assert e2e_bench.is_idle({1: 0.05, 2: 0.04}, one, 0.1)
    assert not e2e_bench.is_idle({1: 0.05, 2: 0.07}, one, 0.1)  # one worker: under a tenth of a core together
    six = {"worker": tuple(range(1, 7)), "kafka broker": (9,)}
    polling = {pid: 0.05 for pid in range(1, 7)} | {9: 0.03}
    assert e2e_bench.is_idle(polling, six, 0.1)  # six idle workers polling
    assert not e2e_bench.is_idle(polling | {3: 0.2}, six, 0.1)  # one of them still catching up
    assert not e2e_bench.is_idle({pid: 0.09 for pid in range(1, 7)} | {9: 0.1}, six, 0.1)
    assert not e2e_bench.is_idle({9: 0.15}, {"kafka broker": (9,)}, 0.1)


def test_the_slowest_frames_come_with_their_breakdown_batch_and_worker():
    from schemas.records import InspectionResult

    def result(part: str, capture_ns: int, batch: int, worker: str) -> InspectionResult:
        return InspectionResult(
            part_id=part,
            line_id="L",
            camera_id="c",
            capture_ts_ns=capture_ns,
            deadline_ts_ns=capture_ns + 200_000_000,
            model_name="m",
            model_version="v",
            label="ok",
            confidence=0.9,
            top_k=[],
            decision="review",
            late=False,
            timings_ms={"queue_wait": 1.0, "decode": 2.0, "inference": 3.0, "total_since_capture": 6.0},
            batch_size=batch,
            worker_id=worker,
            decided_ts_ns=capture_ns + 6_000_000,
        )

    results = [result(f"p{i}", 1_000_000_000 + i * 50_000_000, 1 + i % 2, f"w{i % 2}") for i in range(10)]
    arrivals = {f"p{i}": (10.0 + i, False) for i in range(10)} | {"p3": (120.0, False)}
    arrivals["lost"] = (500.0, True)  # a command whose result the reader never saw still counts
    rows = e2e_bench.slowest_frames(arrivals, results, n=3)
    assert [r["part_id"] for r in rows] == ["lost", "p3", "p9"]
    assert rows[0] == {"part_id": "lost", "to_gate": 500.0}
    assert rows[1] == {
        "part_id": "p3",
        "to_gate": 120.0,
        "capture_s": 0.15,
        "queue_wait": 1.0,
        "decode": 2.0,
        "inference": 3.0,
        "total_since_capture": 6.0,
        "batch_size": 2,
        "worker_id": "w1",
    }
