"""Time `depthprior report` on a synthetic scene of many frames (default 1,000).

A small ray-cast scene (tests/scenes.py) is rendered once; its frames, priors and poses are then
repeated under new names up to --frames, with a manifest and an align run, so the report has
every part to draw: photo and prior thumbnails, a scatter per frame, the series plots.

    PYTHONPATH=src python benchmarks/report_bench.py [--frames 1000] [--size 640x480] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenes import convert_to_binary, make_scene, write_colmap_text  # noqa: E402

from depthprior.priors.manifest import ImageRecord, Manifest  # noqa: E402
from depthprior.report import report  # noqa: E402
from depthprior.scene.align import align  # noqa: E402

#: frames ray cast once (fewer when --frames asks for fewer); the rest repeat them
BASE_FRAMES = 24


def build(root: Path, frames: int, width: int, height: int) -> tuple[Path, Path]:
    base = make_scene(root / "base", n_images=min(BASE_FRAMES, frames), width=width, height=height,
                      points_per_image=1000, model_format="text", corrupt=0.05)
    images, depths = root / "images", root / "depths"
    images.mkdir()
    depths.mkdir()
    names, poses, keypoints = [], {}, {}
    manifest = Manifest(root=depths, identity={"model": "synthetic", "backend": "bench"},
                        inputs=str(images))
    for index in range(frames):
        source = base.names[index % len(base.names)]
        name = f"frame_{index:05d}.jpg"
        shutil.copyfile(base.image_path(source), images / name)
        shutil.copyfile(base.depth_path(source), depths / f"frame_{index:05d}.png")
        names.append(name)
        poses[name] = base.cam_from_world[source]
        keypoints[name] = base.observations[source]
        manifest.images[name] = ImageRecord(
            status="ok", stem=f"frame_{index:05d}", outputs=[f"frame_{index:05d}.png"],
            width=width, height=height, raw_min=0.0, raw_max=1.0, levels=60000, precision_bits=15.9)
    manifest.save()
    text, sparse = root / "sparse_text", root / "sparse" / "0"
    write_colmap_text(text, base.K, width, height, names, poses, keypoints, base.point_ids,
                      base.point_xyz)
    convert_to_binary(text, sparse)
    return depths, sparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--workdir", default=None, help="keep the scene here (default: a temp dir)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    root = Path(args.workdir or tempfile.mkdtemp(prefix="report-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    depths, sparse = build(root, args.frames, width, height)
    fitted = align(sparse, depths)
    print(f"scene: {args.frames} frames of {width}x{height}, {fitted.results[0].points} SfM points "
          f"per frame, built and aligned in {time.perf_counter() - started:.1f} s ({root})")
    started = time.perf_counter()
    summary = report(depths, sparse=sparse)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in summary.assets.iterdir()) + summary.path.stat().st_size
    print(summary.format())
    print(f"report: {seconds:.1f} s for {summary.frames} frames, {size / 1e6:.1f} MB "
          f"(page {summary.path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
