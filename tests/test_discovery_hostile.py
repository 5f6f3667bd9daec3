"""Inputs that must neither hang nor blow up discovery and decoding: FIFOs, sockets, devices,
symlink loops, links out of the input folder, decompression bombs."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthprior.errors import ImageError, UsageError
from depthprior.images import decode_rgb, discover, read_image_or_fail, scan
from synth import scene_rgb, write_image

pytestmark = pytest.mark.hostile

BOMB_SIDE = 20_000
#: far below the 400 MB a decoded 20000x20000 gray picture takes, far above the interpreter
PEAK_LIMIT_MB = 300


def _run_guarded(code: str, timeout: float = 60) -> dict:
    """Run code in a fresh interpreter that must finish in time and print one JSON line.

    Code that hangs or grows without bound makes this fail instead of stopping the suite.
    """
    def limit_memory():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        timeout=timeout, preexec_fn=limit_memory, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _folder_with_image(folder: Path, name: str = "a.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_image(folder / name, scene_rgb(16, 16))


# --- special files -------------------------------------------------------------------------


def test_fifo_named_like_an_image_is_skipped_with_a_reason(tmp_path):
    _folder_with_image(tmp_path)
    os.mkfifo(tmp_path / "b.jpg")
    found = scan(tmp_path)
    assert [item.name for item in found.items] == ["a.jpg"]
    assert "FIFO" in found.skipped["b.jpg"]
    assert [item.name for item in discover(tmp_path)] == ["a.jpg"]
    with pytest.raises(UsageError, match="neither a folder nor a regular image file"):
        discover(tmp_path / "b.jpg")


def test_socket_and_broken_links_are_skipped(tmp_path):
    _folder_with_image(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.png"))
        (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
        (tmp_path / "self.jpg").symlink_to("self.jpg")
        found = scan(tmp_path)
    finally:
        server.close()
    assert [item.name for item in found.items] == ["a.jpg"]
    assert "socket" in found.skipped["s.png"]
    assert "link" in found.skipped["gone.jpg"] and "link" in found.skipped["self.jpg"]


def test_only_special_files_is_no_images_and_says_why(tmp_path):
    os.mkfifo(tmp_path / "b.jpg")
    with pytest.raises(UsageError, match=r"no images found.*b\.jpg: a FIFO"):
        discover(tmp_path)


def test_decode_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "late.jpg"
    os.mkfifo(fifo)  # e.g. appeared after discovery; no writer ever opens it
    outcome = _run_guarded(f"""
        import json
        from depthprior.errors import ImageError
        from depthprior.images import decode_rgb
        try:
            decode_rgb({str(fifo)!r})
            print(json.dumps({{"error": None}}))
        except ImageError as error:
            print(json.dumps({{"error": str(error)}}))
    """, timeout=30)
    assert outcome["error"] and "FIFO" in outcome["error"] and "not a regular file" in outcome["error"]


def test_decode_refuses_a_device():
    with pytest.raises(ImageError, match="device, not a regular file"):
        decode_rgb("/dev/null")


# --- linked folders ------------------------------------------------------------------------


def test_a_link_to_its_own_folder_is_not_entered(tmp_path):
    _folder_with_image(tmp_path)
    (tmp_path / "loop").symlink_to(".")
    found = scan(tmp_path)
    assert [item.name for item in found.items] == ["a.jpg"]
    assert list(found.loops) == ["loop"] and "loop" in found.loops["loop"]


def test_two_loops_finish_and_each_is_reported_once(tmp_path):
    _folder_with_image(tmp_path / "sub", "x.jpg")
    (tmp_path / "a").symlink_to(".")
    (tmp_path / "b").symlink_to(".")
    (tmp_path / "sub" / "up").symlink_to("..")
    outcome = _run_guarded(f"""
        import json
        from depthprior.images import scan
        found = scan({str(tmp_path)!r})
        print(json.dumps({{"items": [i.name for i in found.items], "loops": found.loops}}))
    """, timeout=30)
    assert outcome["items"] == ["sub/x.jpg"]
    assert sorted(outcome["loops"]) == ["a", "b", "sub/up"]


def test_a_linked_alias_of_a_folder_inside_gives_its_images_once_under_the_real_name(tmp_path):
    _folder_with_image(tmp_path / "sub", "x.jpg")
    (tmp_path / "alias").symlink_to("sub")  # sorts before "sub"
    found = scan(tmp_path)
    assert [item.name for item in found.items] == ["sub/x.jpg"]
    assert "already scanned" in found.loops["alias"] and not found.items[0].outside


def test_images_reached_through_links_out_of_the_folder_are_marked_outside(tmp_path):
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    _folder_with_image(images)
    _folder_with_image(elsewhere / "deep", "c.jpg")
    (images / "ext").symlink_to(elsewhere)
    (images / "f.jpg").symlink_to(elsewhere / "deep" / "c.jpg")
    (images / "same.jpg").symlink_to("a.jpg")  # a linked file inside: one more image, inside
    found = scan(images)
    outside = {item.name: item.outside for item in found.items}
    assert outside == {"a.jpg": False, "ext/deep/c.jpg": True, "f.jpg": True, "same.jpg": False}
    assert [item.name for item in found.outside] == ["ext/deep/c.jpg", "f.jpg"]


def test_a_linked_input_root_is_its_own_inside(tmp_path):
    _folder_with_image(tmp_path / "real")
    (tmp_path / "root").symlink_to("real")
    assert [(i.name, i.outside) for i in discover(tmp_path / "root")] == [("a.jpg", False)]


def test_generate_skips_a_fifo_and_loops_and_finishes(tmp_path, tiny_model, cli):
    images, out = tmp_path / "images", tmp_path / "out"
    _folder_with_image(images)
    os.mkfifo(images / "b.jpg")
    (images / "loop").symlink_to(".")
    (images / "loop2").symlink_to(".")
    result = cli("generate", images, out, "--model", tiny_model, "--input-size", "56",
                 "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png"]
    listed = [line.split(":")[0].strip() for line in result.stdout.splitlines() if "IGNORED" in line]
    assert listed == ["IGNORED b.jpg", "IGNORED loop", "IGNORED loop2"], result.stdout


# --- decompression bombs -------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.fixture(scope="session")
def bomb(tmp_path_factory) -> Path:
    """A ~400 KB 8-bit gray PNG that declares 20000x20000 pixels (400 MB decoded)."""
    packer = zlib.compressobj(9)
    row = bytes(1 + BOMB_SIDE)  # filter byte + zero pixels
    idat = b"".join(packer.compress(row) for _ in range(BOMB_SIDE)) + packer.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def test_bomb_is_refused_before_decoding(bomb):
    outcome = _run_guarded(f"""
        import json
        from depthprior.errors import ImageError
        from depthprior.images import decode_rgb
        try:
            decode_rgb({str(bomb)!r})
            error = None
        except ImageError as caught:
            error = str(caught)
        status = open("/proc/self/status").read()  # VmHWM: this program's peak, not the parent's
        peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        print(json.dumps({{"error": error, "peak_mb": peak_mb}}))
    """)
    assert outcome["error"] and "20000x20000" in outcome["error"] and "--max-pixels" in outcome["error"]
    assert outcome["peak_mb"] < PEAK_LIMIT_MB, outcome


def test_pixel_cap_is_the_callers(tmp_path):
    path = write_image(tmp_path / "small.png", scene_rgb(20, 28))
    with pytest.raises(ImageError, match="above the --max-pixels cap"):
        decode_rgb(path, max_pixels=20 * 28 - 1)
    assert decode_rgb(path, max_pixels=20 * 28).shape == (20, 28, 3)
    assert decode_rgb(path, max_pixels=None).shape == (20, 28, 3)
    with pytest.raises(UsageError, match=r"small\.png: .*above the --max-pixels cap"):
        read_image_or_fail(path, max_pixels=100)


@pytest.mark.parametrize("ext", [".hdr", ".pfm"])
def test_formats_pillow_cannot_read_are_capped_by_their_header(tmp_path, ext):
    path = tmp_path / f"wide{ext}"
    assert cv2.imwrite(str(path), np.random.default_rng(0).random((8, 9, 3), dtype=np.float32))
    assert decode_rgb(path).shape == (8, 9, 3)
    with pytest.raises(ImageError, match="9x8 .*above the --max-pixels cap"):
        decode_rgb(path, max_pixels=71)


def test_check_on_a_bomb_is_one_usage_line(bomb, tiny_model, cli):
    result = cli("check", bomb, "--model", tiny_model)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bomb.png" in lines[0] and "20000x20000" in lines[0]
