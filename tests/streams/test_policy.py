import pytest

from streams.policy import DeadlinePolicy, DecisionPolicy, RetrainingPolicy, parse_keyed


def test_parse_keyed():
    assert parse_keyed("0.5", float, "x") == (0.5, {})
    assert parse_keyed(" 0.5 , scratch=0.8,crack = 0.7 ", float, "x") == (0.5, {"scratch": 0.8, "crack": 0.7})
    for bad in ("", "scratch=0.8", "0.5,scratch", "0.5,=0.3", "high"):
        with pytest.raises(ValueError, match="x"):
            parse_keyed(bad, float, "x")


def test_decisions():
    policy = DecisionPolicy.from_spec("ok", "0.6,scratch=0.9", class_names=["ok", "scratch", "crack"])
    assert policy.decide("ok", 0.95) == "pass"
    assert policy.decide("ok", 0.55) == "review"  # an unsure OK is not a silent pass
    assert policy.decide("crack", 0.7) == "reject"
    assert policy.decide("scratch", 0.85) == "review"
    assert policy.decide("scratch", 0.9) == "reject"  # at the threshold counts as sure


def test_decision_policy_refuses_bad_config():
    with pytest.raises(ValueError, match="within"):
        DecisionPolicy.from_spec("ok", "1.5")
    with pytest.raises(ValueError, match="unknown classes"):
        DecisionPolicy.from_spec("ok", "0.5,scrach=0.9", class_names=["ok", "scratch"])
    with pytest.raises(ValueError, match="ok class"):
        DecisionPolicy.from_spec("good", "0.5", class_names=["ok", "scratch"])


def test_deadlines():
    policy = DeadlinePolicy.from_spec("500,line-2=800")
    assert policy.deadline_ns("line-1", 1_000) == 1_000 + 500_000_000
    assert policy.deadline_ns("line-2", 1_000) == 1_000 + 800_000_000
    assert policy.deadline_ns("line-2", 1_000, header_deadline_ns=42) == 42


@pytest.mark.parametrize("spec", ["0", "-500", "nan", "inf", "500,line-2=-1", "500,line-2=3600001"])
def test_a_travel_time_no_line_has_is_refused(spec):
    # Each would give every frame a deadline already past, or one no clock reaches (inf used to raise per frame).
    with pytest.raises(ValueError, match=r"line travel ms for (default|line-2) must be within"):
        DeadlinePolicy.from_spec(spec)


def test_retraining_selection():
    policy = RetrainingPolicy(low_confidence_below=0.8, audit_rate=0.0)
    assert policy.reasons("p", 0.95, "reject") == []
    assert policy.reasons("p", 0.7, "reject") == ["low_confidence"]
    assert policy.reasons("p", 0.7, "review") == ["low_confidence", "review"]
    assert RetrainingPolicy(0.0, 1.0).reasons("p", 0.99, "pass") == ["audit"]
    assert RetrainingPolicy(0.0, 1.0).reasons("p", 0.99, "reject") == []  # audits sample passes only
    # Reviews can be left to the other two rules; a sure review is then not a sample.
    quiet = RetrainingPolicy(low_confidence_below=0.8, audit_rate=0.0, reviews=False)
    assert quiet.reasons("p", 0.95, "review") == []
    assert quiet.reasons("p", 0.7, "review") == ["low_confidence"]


def test_audit_rate_is_about_right_and_stable():
    policy = RetrainingPolicy(low_confidence_below=0.0, audit_rate=0.05)
    chosen = [i for i in range(20_000) if policy.reasons(f"part-{i}", 0.99, "pass")]
    assert 0.04 < len(chosen) / 20_000 < 0.06
    assert chosen == [i for i in range(20_000) if policy.reasons(f"part-{i}", 0.99, "pass")]
    with pytest.raises(ValueError):
        RetrainingPolicy(audit_rate=2.0)
