"""The owners of each kind of file (depthprior.files): what every command inherits from them."""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthprior.errors import FileFormatError, ImageError, UsageError, WriteError
from depthprior.files import outputs
from depthprior.files.jsonfile import MAX_JSON_DEPTH, read_json, write_json
from depthprior.files.outputs import OutputFolder, atomic_write_bytes, write_together
from depthprior.files.raster import check_pixels, decode_rgb, read_mask, read_prior

pytestmark = pytest.mark.hostile


# ---------------------------------------------------------------- JSON

def test_deeply_nested_json_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "depthprior.json"
    path.write_text("[" * 100000)
    with pytest.raises(FileFormatError, match="nested more than") as caught:
        read_json(path)
    assert str(path) in str(caught.value)
    path.write_text(json.dumps(_nest(MAX_JSON_DEPTH + 1)))
    with pytest.raises(FileFormatError, match="nested more than"):
        read_json(path)
    path.write_text(json.dumps(_nest(MAX_JSON_DEPTH)))
    assert read_json(path) == _nest(MAX_JSON_DEPTH)


def _nest(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_json_size_cap_folder_fifo_and_shape_check(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 5000}))
    with pytest.raises(FileFormatError, match="cap"):
        read_json(big, max_bytes=1000)
    with pytest.raises(FileFormatError, match="folder"):
        read_json(tmp_path)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(FileFormatError, match="FIFO"):
        read_json(fifo)  # never blocks

    def must_be_object(data):
        if not isinstance(data, dict):
            raise TypeError("not an object")

    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(FileFormatError, match="malformed: not an object"):
        read_json(listed, check=must_be_object, hint="rerun align")
    assert read_json(tmp_path / "absent.json", missing_ok=True) is None
    with pytest.raises(FileFormatError):
        read_json(tmp_path / "absent.json")
    (tmp_path / "nan.json").write_text("{\"a\": NaN")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        read_json(tmp_path / "nan.json")


# ---------------------------------------------------------------- writes

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG])
def test_write_errors_name_the_file_and_leave_nothing_half_written(tmp_path, monkeypatch, code):
    target = tmp_path / "out" / "a.json"
    write_json(target, {"old": True})

    def failing_replace(source, destination):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(WriteError) as caught:
        write_json(target, {"new": True})
    assert str(target) in str(caught.value) and isinstance(caught.value, OSError)
    assert caught.value.exit_code == 1
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary left


def test_write_together_changes_all_files_or_none(tmp_path, monkeypatch):
    first, second = tmp_path / "params.json", tmp_path / "params.report.json"
    write_together([(first, b"1"), (second, b"1")])
    real_open = open
    calls = []

    def open_failing_second(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_failing_second)
    with pytest.raises(WriteError, match="disk is full"):
        write_together([(first, b"2"), (second, b"2")])
    monkeypatch.undo()
    assert first.read_bytes() == b"1" and second.read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.json", "params.report.json"]


def test_a_name_too_long_for_the_file_system_is_a_write_error_for_that_file(tmp_path):
    with pytest.raises(WriteError, match="too long"):
        atomic_write_bytes(tmp_path / ("x" * 10000 + ".png"), b"data")


def test_output_folder_locks_and_removes_what_a_rerun_no_longer_produces(tmp_path):
    root = tmp_path / "masks"
    with OutputFolder(root) as folder:
        folder.write("a.png", b"a")
        folder.write("sub/b.png", b"b")
        with pytest.raises(UsageError, match="in use by another depthprior run"):
            OutputFolder(root).__enter__()
    with OutputFolder(root) as folder:
        folder.keep("a.png")  # resumed
        removed = folder.remove_unproduced(["a.png", "sub/b.png", "../outside.png"])
    assert removed == ["sub/b.png"]
    assert (root / "a.png").is_file() and not (root / "sub" / "b.png").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "file").__enter__()


# ---------------------------------------------------------------- pictures

def _png(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


def test_pixel_and_aspect_caps():
    check_pixels(1920, 1080)
    check_pixels(8000, 1000)  # a wide panorama
    with pytest.raises(ImageError, match="aspect ratio of 5000:1"):
        check_pixels(1, 5000)
    with pytest.raises(ImageError, match="--max-pixels"):
        check_pixels(20000, 20000)
    with pytest.raises(ImageError, match="empty size"):
        check_pixels(0, 10)


def test_a_1x5000_frame_is_refused_before_decoding(tmp_path):
    path = _png(tmp_path / "strip.png", np.zeros((1, 5000, 3), np.uint8))
    with pytest.raises(ImageError, match="aspect"):
        decode_rgb(path)


def declaring_png(path: Path, width: int, height: int, bits: int = 16) -> Path:
    """A few hundred bytes that declare width x height gray pixels (a decompression bomb's
    header); its data ends early, so only a reader that trusts the header ever decodes it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def test_a_prior_or_mask_declaring_a_huge_size_is_refused_from_its_header(tmp_path):
    bomb = declaring_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match="--max-pixels"):
        read_prior(bomb)
    below_cap = declaring_png(tmp_path / "big.png", 9000, 9000)
    with pytest.raises(ImageError, match="is 9000x9000, its image is 8x6"):
        read_prior(below_cap, (6, 8))
    mask = declaring_png(tmp_path / "mask.png", 9000, 9000, bits=8)
    with pytest.raises(ImageError, match="is 9000x9000"):
        read_mask(mask, (6, 8))


def test_masks_must_have_their_priors_size_dtype_and_one_channel(tmp_path):
    good = _png(tmp_path / "good.png", np.full((6, 8), 255, np.uint8))
    assert read_mask(good, (6, 8)).shape == (6, 8)
    cases = {
        "tiny": (np.zeros((1, 1), np.uint8), "is 1x1, its depth prior is 8x6"),
        "transposed": (np.zeros((8, 6), np.uint8), "is 6x8, its depth prior is 8x6"),
        "uint16": (np.zeros((6, 8), np.uint16), "channel\\(s\\) of 16 bits"),
        "rgb": (np.zeros((6, 8, 3), np.uint8), "3 channel"),
    }
    for name, (array, message) in cases.items():
        with pytest.raises(ImageError, match=message):
            read_mask(_png(tmp_path / f"{name}.png", array), (6, 8))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(ImageError):
        read_mask(tmp_path / "corrupt.png", (6, 8))
    with pytest.raises(ImageError, match="cannot read"):
        read_mask(tmp_path / "absent.png", (6, 8))


def test_priors_must_be_single_channel_16_bit_of_the_records_size(tmp_path):
    prior = _png(tmp_path / "p.png", np.arange(48, dtype=np.uint16).reshape(6, 8))
    assert read_prior(prior, (6, 8)).dtype == np.uint16
    with pytest.raises(ImageError, match="its image is 9x6"):
        read_prior(prior, (6, 9))
    eight = _png(tmp_path / "eight.png", np.zeros((6, 8), np.uint8))
    assert read_prior(eight).dtype == np.uint8  # another tool's 8-bit prior: align warns
    rgb = _png(tmp_path / "rgb.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="3 channel"):
        read_prior(rgb)
