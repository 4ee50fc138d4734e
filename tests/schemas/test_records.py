import json

import jsonschema_rs
import pytest

from schemas import contracts
from schemas.records import (
    RECORD_TYPES,
    DeadLetter,
    InspectionResult,
    RejectCommand,
    SchemaError,
)
from tests.schemas.examples import EXAMPLES, command_record, result_record


def test_every_schema_file_is_valid_draft_2020_12_and_has_a_record_type():
    names = contracts.schema_names()
    assert set(names) == set(RECORD_TYPES) | {"frame_headers"}
    for name in names:
        contracts.validator(name)  # the metaschema check raises on an invalid schema


def test_a_schema_file_that_breaks_the_metaschema_is_refused(tmp_path, monkeypatch):
    (tmp_path / "broken.schema.json").write_text('{"type": "object", "properties": {"a": {"type": "strin"}}}')
    monkeypatch.setattr(contracts, "SCHEMA_DIR", tmp_path)
    contracts.validator.cache_clear()
    try:
        with pytest.raises(jsonschema_rs.ValidationError, match="strin"):
            contracts.validator("broken")
    finally:
        contracts.validator.cache_clear()


@pytest.mark.parametrize(
    "raw",
    [
        # Nested past the validator's recursion limit (json.loads accepts ~1000 levels).
        '{"kind": "reject_command", "schema_version": 2, "label": ' + "[" * 400 + "]" * 400 + "}",
        # A key with a lone surrogate: valid JSON, not encodable as UTF-8.
        '{"kind": "reject_command", "schema_version": 2, "\\ud800": 1}',
    ],
)
def test_documents_the_validator_cannot_walk_are_schema_errors(raw):
    with pytest.raises(SchemaError, match="cannot be validated"):
        RejectCommand.from_json(raw)


def test_errors_name_where_and_what():
    problems = contracts.errors("reject_command", {"kind": "reject_command", "schema_version": 2, "part_id": ""})
    assert any(p.startswith("part_id: ") for p in problems), problems
    assert any(p.startswith("(root): ") and "line_id" in p for p in problems), problems


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_record_round_trips_and_conforms_to_its_schema(kind):
    record = EXAMPLES[kind]
    data = json.loads(record.to_json())
    assert data["kind"] == kind and data["schema_version"] == 2
    assert contracts.errors(kind, data) == []
    assert RECORD_TYPES[kind].from_json(record.to_json()) == record


def test_wrong_kind_version_and_garbage_are_refused():
    with pytest.raises(SchemaError, match="expected a reject_command"):
        RejectCommand.from_json(result_record().to_json())
    data = json.loads(result_record().to_json())
    data["schema_version"] = 1
    with pytest.raises(SchemaError, match="unsupported schema_version 1"):
        InspectionResult.from_json(json.dumps(data))
    with pytest.raises(SchemaError, match="not JSON"):
        DeadLetter.from_json(b"\x00garbage")


def test_missing_and_unknown_fields_are_refused():
    data = json.loads(result_record().to_json())
    del data["label"]
    with pytest.raises(SchemaError, match='"label" is a required property'):
        InspectionResult.from_json(json.dumps(data))
    data = json.loads(result_record().to_json())
    data["colour"] = "red"
    with pytest.raises(SchemaError, match="colour"):
        InspectionResult.from_json(json.dumps(data))


@pytest.mark.parametrize("raw", [None, b"[1, 2]", b"42", b'"text"'])
def test_non_objects_are_schema_errors(raw):
    with pytest.raises(SchemaError):
        RejectCommand.from_json(raw)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("capture_ts_ns", "yesterday", "capture_ts_ns"),
        ("capture_ts_ns", 1.5, "capture_ts_ns"),
        ("deadline_ts_ns", 2**63, "deadline_ts_ns"),  # what a Java long or Go int64 cannot hold
        ("late", 1, "late"),
        ("action", "shred", "action"),
        ("reason", "scratch", "reason"),
    ],
)
def test_field_values_are_checked(field, value, fragment):
    data = json.loads(command_record().to_json())
    data[field] = value
    with pytest.raises(SchemaError, match=fragment):
        RejectCommand.from_json(json.dumps(data))


def test_result_decision_and_confidence_ranges():
    for change in ({"decision": "maybe"}, {"confidence": 1.5}, {"top_k": []}):
        data = {**json.loads(result_record().to_json()), **change}
        with pytest.raises(SchemaError):
            InspectionResult.from_json(json.dumps(data))


def test_dead_letter_payload_decodes():
    assert EXAMPLES["dead_letter"].payload() == b"abc"
    assert EXAMPLES["retraining_sample"].image() == b"abc"
