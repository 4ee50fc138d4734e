import shutil

import cv2
import numpy as np
import pytest

from models import data as ds


def _write(folder, name, img):
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), img)


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        for i in range(20):
            _write(tmp_path / "images" / label, f"{label}{i}.png", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
    # Exact duplicates inside a class (must be dropped before splitting).
    shutil.copy(tmp_path / "images" / "a" / "a0.png", tmp_path / "images" / "a" / "a0_copy.png")
    shutil.copy(tmp_path / "images" / "b" / "b3.png", tmp_path / "images" / "b" / "b3_copy.png")
    return tmp_path


def test_duplicates_never_straddle_splits(tree):
    records = ds.discover(tree)
    assert len(records) == 62
    kept, dropped = ds.dedupe(records)
    assert len(kept) == 60 and len(dropped) == 2
    splits = ds.stratified_split(kept, (0.6, 0.2, 0.2), seed=0)
    hashes = [{r.md5 for r in splits[s]} for s in ds.SPLITS]
    assert not (hashes[0] & hashes[1]) and not (hashes[0] & hashes[2]) and not (hashes[1] & hashes[2])
    assert sum(len(v) for v in splits.values()) == 60
    for label in ("a", "b", "c"):  # stratified: 12/4/4 of each class
        assert [sum(r.label == label for r in splits[s]) for s in ds.SPLITS] == [12, 4, 4]


def test_split_is_deterministic_by_seed(tree):
    kept, _ = ds.dedupe(ds.discover(tree))
    one, two = ds.stratified_split(kept, seed=3), ds.stratified_split(list(reversed(kept)), seed=3)
    assert [r.path for r in one["test"]] == [r.path for r in two["test"]]
    assert [r.path for r in ds.stratified_split(kept, seed=4)["test"]] != [r.path for r in one["test"]]


def test_conflicting_labels_for_one_image_are_an_error(tree):
    shutil.copy(tree / "images" / "a" / "a1.png", tree / "images" / "c" / "looks_like_a1.png")
    with pytest.raises(ValueError, match="different labels"):
        ds.dedupe(ds.discover(tree))


def test_manifest_groups_stay_together(tmp_path):
    rng = np.random.default_rng(1)
    rows = ["path,class,group"]
    for i in range(40):
        label = "x" if i % 2 else "y"
        _write(tmp_path / label, f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        rows.append(f"{label}/{i}.png,{label},part{i // 4}")
    (tmp_path / "m.csv").write_text("\n".join(rows))
    splits = ds.stratified_split(ds.dedupe(ds.discover(tmp_path / "m.csv"))[0], seed=0)
    side = {}
    for s, recs in splits.items():
        for r in recs:
            assert side.setdefault(r.group, s) == s, f"group {r.group} split across {side[r.group]} and {s}"


def test_reencode_gives_png_and_jpeg_sources_the_same_artifacts(tmp_path):
    img = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8), (0, 0), 2)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    cv2.imwrite(str(tmp_path / "x.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    raw_png, raw_jpg = ds.load_rgb(str(tmp_path / "x.png")), ds.load_rgb(str(tmp_path / "x.jpg"))
    png, jpg = ds.load_rgb(str(tmp_path / "x.png"), "jpeg90"), ds.load_rgb(str(tmp_path / "x.jpg"), "jpeg90")
    assert not np.array_equal(png, raw_png)  # the PNG now carries JPEG artifacts too

    def diff(a, b):
        return np.abs(a.astype(int) - b.astype(int)).mean()

    assert diff(png, jpg) < diff(raw_png, raw_jpg)
    with pytest.raises(ValueError, match="unknown re-encoding"):
        ds.load_rgb(str(tmp_path / "x.png"), "png")


def test_balanced_sampler_evens_out_classes():
    labels = [0] * 90 + [1] * 10
    drawn = list(ds.balanced_sampler(labels, 2, seed=0))
    share = np.mean([labels[i] == 1 for i in drawn])
    assert 0.35 < share < 0.65
