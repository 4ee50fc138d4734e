import pytest

from schemas.frame import FrameMeta, InvalidFrame, headers_to_dict, parse_frame_headers

BASE = {"part_id": "p", "line_id": "l", "camera_id": "c", "capture_ts_ns": "1"}


def test_headers_round_trip():
    meta = FrameMeta(part_id="p1", line_id="l1", camera_id="c1", capture_ts_ns=123, content_type="image/png")
    assert parse_frame_headers(headers_to_dict(meta.to_headers())) == meta
    full = FrameMeta(
        part_id="p1",
        line_id="line-2",
        camera_id="c1",
        capture_ts_ns=123,
        content_type="image/x-raw",
        raw_shape=(480, 640, 3),
        station="s1",
        trace_id="t-9",
        gate_deadline_ts_ns=999,
    )
    assert parse_frame_headers(headers_to_dict(full.to_headers())) == full


def test_missing_headers_are_named():
    with pytest.raises(InvalidFrame, match="line_id, camera_id") as exc:
        parse_frame_headers({"part_id": "p", "capture_ts_ns": "1"})
    assert exc.value.reason == "missing_headers"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"capture_ts_ns": "yesterday"}, "capture_ts_ns"),
        ({"capture_ts_ns": "-5"}, "capture_ts_ns"),
        ({"content_type": "image/gif"}, "image/gif"),
        ({"content_type": "image/x-raw"}, "raw_shape"),
        ({"content_type": "image/x-raw", "raw_shape": "480x640x4"}, "raw_shape"),
        ({"line_id": "line 1; drop"}, "line_id"),
        ({"gate_deadline_ts_ns": "soon"}, "gate_deadline_ts_ns"),
        ({"part_id": "p" * 200}, "part_id"),
        # 19 digits but above what a signed 64-bit integer holds with a deadline added: a Java or Go reader of the
        # results would overflow on it.
        ({"capture_ts_ns": "9223372036854775808"}, "capture_ts_ns"),
        ({"capture_ts_ns": "9200000000000000000"}, "capture_ts_ns"),
        ({"gate_deadline_ts_ns": "9999999999999999999"}, "gate_deadline_ts_ns"),
    ],
)
def test_bad_header_values(headers, fragment):
    with pytest.raises(InvalidFrame, match=fragment) as exc:
        parse_frame_headers({**BASE, **headers})
    assert exc.value.reason == "bad_header"


@pytest.mark.parametrize("ts", ["0", "1764316800000000000", "0999999999999999999", "9199999999999999999"])
def test_timestamps_up_to_the_year_2261_are_taken(ts):
    meta = parse_frame_headers({**BASE, "capture_ts_ns": ts, "gate_deadline_ts_ns": ts})
    assert meta.capture_ts_ns == meta.gate_deadline_ts_ns == int(ts) < 2**63 - 3_600_000 * 1_000_000


def test_extra_headers_are_allowed():
    assert parse_frame_headers({**BASE, "traceparent": "00-abc"}).part_id == "p"


def test_non_utf8_header_is_kept_not_raised():
    assert headers_to_dict([("part_id", b"\xff\xfe")])["part_id"] == "\ufffd\ufffd"
