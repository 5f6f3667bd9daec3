from __future__ import annotations

import json

import numpy as np
import pytest

from depthprior.errors import UsageError
from depthprior.priors.manifest import ImageRecord, Manifest
from depthprior.priors.store import (
    TMP_MARK,
    decode_inverse_depth,
    encode_inverse_depth,
    read_png16,
    remove_stale_temporaries,
    write_png16,
)


def test_encode_minmax_full_range_and_round_trip():
    values = np.linspace(0.25, 3.0, 200, dtype=np.float32).reshape(10, 20)
    encoded = encode_inverse_depth(values, "disparity")
    assert encoded.png.dtype == np.uint16
    assert encoded.png.min() == 0 and encoded.png.max() == 65535
    assert encoded.png[0, 0] == 0 and encoded.png[-1, -1] == 65535  # near (large disparity) = bright
    back = decode_inverse_depth(encoded.png, encoded.raw_min, encoded.raw_max)
    assert np.abs(back - values).max() <= (3.0 - 0.25) / 65535
    assert encoded.levels == 200 and not encoded.constant


def test_metric_depth_becomes_inverse_depth():
    depth = np.array([[1.0, 2.0], [4.0, 0.0]], dtype=np.float32)  # 0 = invalid
    encoded = encode_inverse_depth(depth, "depth")
    assert encoded.raw_kind == "inverse_depth"
    assert encoded.raw_max == pytest.approx(1.0) and encoded.raw_min == 0.0
    assert encoded.png[0, 0] == 65535  # nearest is brightest
    assert encoded.png[1, 0] == round(0.25 * 65535)


def test_constant_map_is_flagged_not_divided():
    encoded = encode_inverse_depth(np.full((4, 4), 7.0, np.float32), "disparity")
    assert encoded.constant and not encoded.png.any()


def test_nan_is_rejected():
    values = np.ones((3, 3), np.float32)
    values[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encode_inverse_depth(values, "disparity")


def test_png_write_is_atomic_and_readable(tmp_path):
    image = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    write_png16(tmp_path / "a" / "b.png", image)
    assert np.array_equal(read_png16(tmp_path / "a" / "b.png"), image)
    assert not [p for p in tmp_path.rglob("*") if TMP_MARK in p.name]


def test_stale_temporaries_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"x.png{TMP_MARK}123-0").write_bytes(b"partial")
    (tmp_path / "keep.png").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.png"]


def test_manifest_round_trip_and_differences(tmp_path):
    manifest = Manifest(root=tmp_path, identity={"backend": "torch", "model": "m", "input_size": 518})
    manifest.images["a.jpg"] = ImageRecord(status="ok", stem="a", outputs=["a.png"])
    manifest.save()
    data = json.loads((tmp_path / "depthprior.json").read_text())
    assert data["format"] == "depthprior-manifest" and "decode" in data["convention"]
    loaded = Manifest.load(tmp_path)
    assert loaded.images == manifest.images
    assert loaded.differences({"backend": "torch", "model": "m", "input_size": 518}) == []
    assert loaded.differences({"backend": "torch", "model": "other", "input_size": 518}) == [
        "model: 'm' there, 'other' now"
    ]
    assert not loaded.is_complete("a.jpg", "png")  # record but no file
    (tmp_path / "a.png").write_bytes(b"x")
    assert loaded.is_complete("a.jpg", "png") and not loaded.is_complete("a.jpg", "both")


def test_foreign_json_is_refused(tmp_path):
    (tmp_path / "depthprior.json").write_text("{\"something\": 1}")
    with pytest.raises(UsageError, match="not a depthprior manifest"):
        Manifest.load(tmp_path)
