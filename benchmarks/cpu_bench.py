"""CPU benchmark behind the README's performance section.

    python benchmarks/cpu_bench.py ../shared/photos --backends torch,onnx --baseline
    python benchmarks/cpu_bench.py PHOTOS --model CHECKPOINT --input-size 56 --repeats 1   (smoke test)

Builds a random-weight Depth-Anything-V2-Small (real shapes, no download), then times, per
backend, the bare forward against end-to-end generate on the given photos, and optionally the
plain transformers pipeline loop. With --rss-counts 10,100 it also runs the best backend on
10 and 100 frames (copies of the photos) to show that peak memory does not grow with the count.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_model import build  # noqa: E402


def copies(photos: list[Path], count: int, folder: Path) -> Path:
    """`count` frames in `folder`, the photos in turn: hard links (copies across file systems),
    since generate warns about symbolic links that lead out of the input folder."""
    folder.mkdir(parents=True)
    for index, photo in zip(range(count), itertools.cycle(photos)):
        target = folder / f"frame_{index:04d}{photo.suffix.lower()}"
        try:
            os.link(photo.resolve(), target)
        except OSError:
            shutil.copyfile(photo, target)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--rss-counts", default="", help="e.g. 10,100")
    parser.add_argument("--model", default=None, help="existing checkpoint folder (default: build one)")
    args = parser.parse_args()

    from depthprior.priors.backends import BackendSettings, create_backend
    from depthprior.priors.bench import BenchReport, bench, bench_backend
    from depthprior.images import scan

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = args.model or str(build("small", scratch / "model"))
        settings = BackendSettings(model=model, input_size=args.input_size)
        backends = [b for b in args.backends.split(",") if b]
        found = scan(args.photos)
        report = bench(found, backends=backends, settings=settings, baseline=args.baseline,
                       repeats=args.repeats)
        print(report.format(), flush=True)
        if not args.rss_counts:
            return
        photos = [item.path for item in found.items]
        best = min((row for row in report.rows if row.label in backends), key=lambda row: row.e2e_s)
        name = best.label
        engine_settings = settings
        if name == "onnx":
            from depthprior.priors.onnx_export import export_onnx

            export_onnx(model, scratch / "model.onnx", input_size=args.input_size)
            engine_settings = BackendSettings(model=str(scratch / "model.onnx"), input_size=args.input_size)
        rows = []
        for count in [int(c) for c in args.rss_counts.split(",")]:
            folder = copies(photos, count, scratch / f"frames_{count}")
            start = time.perf_counter()
            with create_backend(name, engine_settings) as engine:
                rows.append(bench_backend(engine, folder, f"{name} x{count}", load_s=time.perf_counter() - start))
            shutil.rmtree(folder)
            print(BenchReport(rows[-1:]).format().splitlines()[-1], flush=True)
        print(BenchReport(rows).format())


if __name__ == "__main__":
    main()
