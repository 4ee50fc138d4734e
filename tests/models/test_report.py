import numpy as np

from models.report import markdown_summary, misclassified


def test_misclassified_lists_exactly_the_wrong_predictions_most_confident_first():
    probs = np.array([[0.9, 0.1, 0.0], [0.3, 0.6, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])
    errors = misclassified(probs, [0, 0, 1, 2], ["a.png", "b.png", "c.png", "d.png"], ["ok", "dent", "burr"])
    assert [e["path"] for e in errors] == ["d.png", "c.png", "b.png"]
    assert errors[0] == {
        "path": "d.png",
        "label": "burr",
        "predicted": "dent",
        "confidence": 0.8,
        "label_probability": 0.1,
    }


def test_summary_shows_misclassified_images_and_caps_the_list():
    report = {
        "accuracy": 0.5,
        "samples": 4,
        "macro_f1": 0.5,
        "ece": 0.1,
        "per_class": {},
        "misclassified": [
            {"path": f"img{i}.png", "label": "ok", "predicted": "dent", "confidence": 0.9, "label_probability": 0.1}
            for i in range(3)
        ],
    }
    text = markdown_summary(report, {}, max_errors=2)
    assert "Misclassified images (3, most confident first, first 2)" in text
    assert "img1.png" in text and "img2.png" not in text
