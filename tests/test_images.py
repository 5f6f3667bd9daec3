from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from depthprior.errors import ImageError, UsageError
from depthprior.images import decode_rgb, discover, normalise_extensions
from synth import scene_rgb, write_image


def test_discover_recursive_case_insensitive_sorted(tmp_path):
    for name in ["b.JPG", "a.jpeg", "sub/c.Png", "sub/deeper/d.jpg", "notes.txt", ".hidden/e.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = discover(tmp_path)
    assert [item.name for item in items] == ["a.jpeg", "b.JPG", "sub/c.Png", "sub/deeper/d.jpg"]
    assert items[2].stem == "sub/c" and not any(item.outside for item in items)


def test_extra_extensions(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    with pytest.raises(UsageError, match="no images found"):
        discover(tmp_path)
    assert [i.name for i in discover(tmp_path, normalise_extensions(["tif"]))] == ["a.tif"]


def test_collision_is_reported_with_both_names(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"a\.jpg and a\.png"):
        discover(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        discover(tmp_path / "nope")


def _pil_bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def test_exif_rotation_is_ignored(tmp_path):
    rgb = scene_rgb(30, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95))
    with Image.open(path) as pil:
        assert pil.getexif()[0x0112] == 6
    decoded = decode_rgb(path)
    assert decoded.shape == (30, 50, 3)  # stored array, not the displayed 50x30
    assert np.abs(decoded.astype(int) - rgb).mean() < 8


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_unusual_pixel_formats_decode_to_rgb8(tmp_path, mode):
    rgb = scene_rgb(20, 28)
    pil = Image.fromarray(rgb)
    if mode == "I;16":
        pil = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    else:
        pil = pil.convert(mode)
    fmt, suffix = ("JPEG", ".jpg") if mode == "CMYK" else ("PNG", ".png")
    path = tmp_path / f"img{suffix}"
    path.write_bytes(_pil_bytes(pil, fmt))
    decoded = decode_rgb(path)
    assert decoded.shape == (20, 28, 3) and decoded.dtype == np.uint8
    if mode == "I;16":
        assert np.array_equal(decoded[..., 0], rgb[..., 0])  # 16-bit scaled to 8 without loss here
    if mode == "CMYK":
        assert np.abs(decoded.astype(int) - rgb).mean() < 12


def test_bad_files_raise_image_error(tmp_path):
    good = write_image(tmp_path / "good.jpg", scene_rgb(64, 64))
    data = good.read_bytes()
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image at all\n" * 10,
        "truncated.jpg": data[: len(data) // 2],
    }
    png = write_image(tmp_path / "good.png", scene_rgb(64, 64)).read_bytes()
    cases["truncated.png"] = png[: len(png) // 2]
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError):
            decode_rgb(tmp_path / name)


def test_jpeg_with_trailing_bytes_after_eoi_is_fine(tmp_path):
    good = write_image(tmp_path / "good.jpg", scene_rgb(32, 32))
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(good.read_bytes() + b"\0" * 8000)
    assert np.array_equal(decode_rgb(padded), decode_rgb(good))


def test_grayscale_png_channels(tmp_path):
    gray = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), gray)
    decoded = decode_rgb(path)
    assert np.array_equal(decoded[..., 0], gray) and np.array_equal(decoded[..., 2], gray)


def test_the_pixel_cap_refusal_gives_the_megapixels_it_compares():
    """A 32x24 frame over a cap of 100 pixels read '= 0 MP, above the cap of 0.0001 MP'."""
    from depthprior.files.raster import check_pixels

    with pytest.raises(ImageError, match=r"32x24 = 0\.000768 MP, above the --max-pixels cap of 0\.0001 MP"):
        check_pixels(32, 24, max_pixels=100)
