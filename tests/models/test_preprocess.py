import cv2
import numpy as np
import pytest

from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, UndecodableImage, decode_image, preprocess_batch


def _jpeg(img_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    return buf.tobytes()


def test_decode_returns_rgb():
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in BGR order
    rgb = decode_image(_jpeg(bgr))
    assert rgb.shape == (20, 30, 3)
    assert rgb[..., 0].mean() > 240 and rgb[..., 2].mean() < 15


@pytest.mark.parametrize("payload", [b"", b"not an image at all", _jpeg(np.zeros((64, 64, 3), np.uint8))[:40]])
def test_undecodable_payloads_raise(payload):
    with pytest.raises(UndecodableImage):
        decode_image(payload)


def test_preprocess_shape_and_normalization():
    imgs = [np.full((50, 80, 3), 255, np.uint8), np.zeros((10, 10, 3), np.uint8)]
    batch = preprocess_batch(imgs, 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    for c in range(3):
        assert batch[0, c].mean() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-5)
        assert batch[1, c].mean() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], rel=1e-5)


def test_jpeg_size_reads_the_header():
    data = _jpeg(np.zeros((48, 80, 3), np.uint8))
    from models.preprocess import jpeg_size

    assert jpeg_size(data) == (80, 48)
    assert jpeg_size(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()) is None
    assert jpeg_size(b"\xff\xd8\xff") is None


def test_reduced_decode_keeps_at_least_the_input_size():
    big = _jpeg(np.random.default_rng(0).integers(0, 255, (1024, 1280, 3), dtype=np.uint8))
    assert decode_image(big).shape == (1024, 1280, 3)
    assert decode_image(big, min_side=128).shape == (128, 160, 3)  # 1/8
    assert decode_image(big, min_side=224).shape == (256, 320, 3)  # 1/4: 1/8 would be below 224
    assert decode_image(big, min_side=1000).shape == (1024, 1280, 3)  # no factor fits: full decode


def test_reduced_decode_of_a_smooth_image_matches_full_decode_after_resize():
    yy, xx = np.mgrid[0:960, 0:1280]
    smooth = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    smooth = cv2.GaussianBlur(smooth, (0, 0), 8)
    data = _jpeg(smooth)
    full = preprocess_batch([decode_image(data)], 96)
    fast = preprocess_batch([decode_image(data, min_side=96)], 96)
    assert np.abs(full - fast).mean() < 0.05  # in normalized units (~1 grey level)
