import json

import pytest

from schemas.records import DeadLetter, InspectionResult, RejectCommand, SchemaError


def _result(**kw):
    base = dict(
        part_id="p",
        line_id="l",
        camera_id="c",
        capture_ts_ns=1,
        model_version="v",
        label="ok",
        confidence=0.9,
        decision="pass",
        worker_id="w",
        decided_ts_ns=2,
        timings_ms={"decode": 1.0},
    )
    return InspectionResult(**{**base, **kw})


def test_round_trip():
    r = _result()
    assert InspectionResult.from_json(r.to_json()) == r
    cmd = RejectCommand(part_id="p", line_id="l", gate_id="g", reason="scratch", capture_ts_ns=1, decided_ts_ns=2)
    assert RejectCommand.from_json(cmd.to_json()) == cmd


def test_every_record_carries_kind_and_schema_version():
    data = json.loads(_result().to_json())
    assert data["kind"] == "inspection_result" and data["schema_version"] == 1


def test_wrong_kind_version_and_garbage_are_refused():
    with pytest.raises(SchemaError, match="expected a reject_command"):
        RejectCommand.from_json(_result().to_json())
    data = json.loads(_result().to_json())
    data["schema_version"] = 99
    with pytest.raises(SchemaError, match="unsupported schema_version 99"):
        InspectionResult.from_json(json.dumps(data))
    with pytest.raises(SchemaError, match="not JSON"):
        DeadLetter.from_json(b"\x00garbage")


def test_missing_and_unknown_fields_are_refused():
    data = json.loads(_result().to_json())
    del data["label"]
    with pytest.raises(SchemaError, match="label"):
        InspectionResult.from_json(json.dumps(data))
    data = json.loads(_result().to_json())
    data["colour"] = "red"
    with pytest.raises(SchemaError, match="colour"):
        InspectionResult.from_json(json.dumps(data))


@pytest.mark.parametrize("raw", [None, b"[1, 2]", b"42", b'"text"'])
def test_non_objects_are_schema_errors(raw):
    with pytest.raises(SchemaError):
        RejectCommand.from_json(raw)


def test_field_types_are_checked():
    data = json.loads(
        RejectCommand(part_id="p", line_id="l", gate_id="g", reason="r", capture_ts_ns=1, decided_ts_ns=2).to_json()
    )
    data["capture_ts_ns"] = "yesterday"
    with pytest.raises(SchemaError, match="capture_ts_ns must be int"):
        RejectCommand.from_json(json.dumps(data))
    data["capture_ts_ns"] = True
    with pytest.raises(SchemaError, match="capture_ts_ns"):
        RejectCommand.from_json(json.dumps(data))
