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


def test_png_size_reads_the_header():
    from models.preprocess import png_size

    assert png_size(cv2.imencode(".png", np.zeros((48, 80, 3), np.uint8))[1].tobytes()) == (80, 48)
    assert png_size(_jpeg(np.zeros((4, 4, 3), np.uint8))) is None
    assert png_size(b"\x89PNG\r\n\x1a\n") is None


def _corrupt_in_scan(jpeg: bytes, patch: bytes) -> bytes:
    middle = (jpeg.index(b"\xff\xda") + len(jpeg)) // 2  # inside the entropy-coded image data
    return jpeg[:middle] + patch + jpeg[middle + len(patch) :]


# Damage libjpeg notices. Most single bit errors it does not (JPEG has no checksum; 42 of 200 random flips here).
@pytest.mark.parametrize(
    "patch", [b"\xff\xd9", b"\xff\xd0", bytes(64)], ids=["end-marker", "restart-marker", "zeroed-run"]
)
def test_a_jpeg_with_corrupt_image_data_is_refused_not_filled_in(patch):
    photo = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8), (5, 5), 0)
    data = _corrupt_in_scan(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(), patch)
    # What OpenCV alone makes of it: a whole image, part of it made up.
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    with pytest.raises(UndecodableImage, match="corrupt or truncated JPEG"):
        decode_image(data)
    with pytest.raises(UndecodableImage, match="corrupt or truncated JPEG"):
        decode_image(data, min_side=64)  # the reduced decode checks too


@pytest.mark.parametrize("size", [(480, 640), (479, 643), (1024, 1280)])
@pytest.mark.parametrize("min_side", [None, 60, 100, 224])
def test_jpeg_pixels_are_opencvs(size, min_side):
    """The decoder changed (OpenCV -> simplejpeg), the pixels may not: models were trained and measured on these."""
    photo = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 255, (*size, 3), dtype=np.uint8), (7, 7), 2)
    data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    got = decode_image(data, min_side=min_side)
    factor = next((f for f in (8, 4, 2) if min(size) // f >= (min_side or 10**9)), 1)
    flag = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}
    opencv = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), flag.get(factor, cv2.IMREAD_COLOR)), cv2.COLOR_BGR2RGB
    )
    assert got.shape == opencv.shape and np.array_equal(got, opencv)


def test_grayscale_and_cmyk_jpegs_decode_to_rgb():
    import simplejpeg

    gray = cv2.imencode(".jpg", np.full((20, 30), 77, np.uint8))[1].tobytes()
    assert decode_image(gray).shape == (20, 30, 3)
    cmyk = simplejpeg.encode_jpeg(np.full((16, 24, 4), 40, np.uint8), colorspace="CMYK")
    rgb = decode_image(cmyk)
    assert rgb.shape == (16, 24, 3) and np.array_equal(
        rgb, cv2.cvtColor(cv2.imdecode(np.frombuffer(cmyk, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    )
    with pytest.raises(UndecodableImage):
        decode_image(cmyk[: len(cmyk) // 2])


def test_a_png_bomb_is_refused_from_its_header():
    import struct
    import zlib

    # A real 1-bit grayscale PNG of 30000x30000 (~110 KB): 2.7 GB once OpenCV decodes it to BGR.
    width = height = 30000
    packer = zlib.compressobj(9)
    row = bytes(1 + width // 8)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    png += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    assert len(png) < 200_000
    with pytest.raises(UndecodableImage, match="30000x30000 pixels is above the limit of 40000000"):
        decode_image(png, max_pixels=40_000_000)
    big_jpeg = _jpeg(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(UndecodableImage, match="100x100 pixels is above the limit of 9999"):
        decode_image(big_jpeg, max_pixels=9999)
    assert decode_image(big_jpeg, max_pixels=10_000).shape == (100, 100, 3)


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
