import cv2
import numpy as np
import pytest

from streams.sources import folder_frames, open_source, video_frames


def _video(path, frames=3):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 * (i + 1), np.uint8))
    writer.release()
    return path


def test_video_frames_loop_until_count(tmp_path):
    frames = list(video_frames(_video(tmp_path / "line.avi"), count=7))
    assert len(frames) == 7
    decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for _, b, _ in frames]
    assert all(img.shape == (48, 64, 3) for img in decoded)
    levels = [int(img.mean()) for img in decoded]
    assert levels[0] == pytest.approx(levels[3], abs=3) and levels[0] < levels[2]  # looped back to the start
    assert {ct for _, _, ct in frames} == {"image/jpeg"}


def test_open_source_dispatch(tmp_path):
    (tmp_path / "imgs" / "ok").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "imgs" / "ok" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert [label for label, _, _ in open_source(str(tmp_path / "imgs"), 3)] == ["ok", "ok", "ok"]
    assert len(list(open_source(str(_video(tmp_path / "v.avi")), 2))) == 2
    assert len(list(open_source("synthetic", 2))) == 2
    with pytest.raises(ValueError, match="synthetic"):
        open_source(str(tmp_path / "notes.txt"), 1)
    with pytest.raises(FileNotFoundError):
        list(video_frames(tmp_path / "missing.avi"))
    with pytest.raises(FileNotFoundError):
        list(folder_frames(tmp_path / "empty-dir-that-is-missing"))
