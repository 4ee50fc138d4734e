import numpy as np
import pytest

from models.metrics import classification_report, confusion_matrix, defect_rates, expected_calibration_error, macro_f1


def test_confusion_and_macro_f1_by_hand():
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per class: 0.5, 0.8, 2/3
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_detection_and_false_positive_rate():
    # ok = 0. Defective parts: 4, of which 3 flagged (a wrong defect class still counts). OK parts: 2, one flagged.
    rates = defect_rates([1, 2, 1, 2, 0, 0], [2, 2, 0, 1, 0, 1], ok_index=0)
    assert rates["detection_rate"] == pytest.approx(0.75)
    assert rates["false_positive_rate"] == pytest.approx(0.5)


def test_ece_of_perfectly_calibrated_and_overconfident():
    probs = np.array([[0.8, 0.2]] * 10)
    y = [0] * 8 + [1] * 2  # 80% right at 80% confidence
    assert expected_calibration_error(probs, y)[0] == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(probs, [1] * 10)[0] == pytest.approx(0.8)


def test_report_has_rates_only_with_an_ok_class():
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert "detection_rate" in classification_report(probs, [0, 1, 2, 2], ["ok", "a", "b"])
    assert "detection_rate" not in classification_report(probs, [0, 1, 2, 2], ["x", "a", "b"])


def test_macro_f1_counts_a_class_that_is_predicted_but_absent():
    # Class 2 never occurs but is predicted once: its F1 is 0 and it counts, as in sklearn.
    assert macro_f1([0, 0, 1, 1], [0, 2, 1, 1], 3) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
