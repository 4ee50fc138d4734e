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
