import pytest

from schemas.frame import FrameMeta, InvalidFrame, headers_to_dict, parse_frame_headers


def test_headers_round_trip():
    meta = FrameMeta(part_id="p1", line_id="l1", camera_id="c1", capture_ts_ns=123, content_type="image/png")
    assert parse_frame_headers(headers_to_dict(meta.to_headers())) == meta


def test_missing_headers_are_named():
    with pytest.raises(InvalidFrame, match="line_id, camera_id") as exc:
        parse_frame_headers({"part_id": "p", "capture_ts_ns": "1"})
    assert exc.value.reason == "missing_headers"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"capture_ts_ns": "yesterday"}, "capture_ts_ns must be an integer"),
        ({"content_type": "image/gif"}, "image/gif"),
    ],
)
def test_bad_header_values(headers, fragment):
    base = {"part_id": "p", "line_id": "l", "camera_id": "c", "capture_ts_ns": "1"}
    with pytest.raises(InvalidFrame, match=fragment) as exc:
        parse_frame_headers({**base, **headers})
    assert exc.value.reason == "bad_header"


def test_non_utf8_header_is_kept_not_raised():
    assert headers_to_dict([("part_id", b"\xff\xfe")])["part_id"] == "\ufffd\ufffd"
