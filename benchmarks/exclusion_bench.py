"""Exclusion masks: what they do to the fit and the masks, and what they cost per frame.

    PYTHONPATH=src python benchmarks/exclusion_bench.py --frames 24 --size 320x240 \
        --photos ../shared/photos --repeats 2

Fit: the synthetic scene of tests/test_exclusion_scene.py (tests/scenes.py: a room on a ring
of cameras) with a "sky" band (the top quarter: prior 0, as Depth Anything predicts the sky;
the room's SfM points behind it are outliers) and a "moving" disc per frame (prior off by
30-60%, elsewhere in every frame). align (robust and mad) with and without the exclusion
masks: mean relative error of the fitted inverse depth against the truth; consistency with
and without: the share of kept (not excluded) pixels rejected.

Cost (with --photos): random-weight checkpoints with the real architectures (no download is
possible here; the timings are the real models', the masks mean nothing): UperNet-ConvNeXt-T
as openmmlab/upernet-convnext-tiny (ADE20K, 150 classes) at --seg-input-size, and
Depth-Anything-V2-Small (benchmarks/random_model.py) at 518, per frame on --device, each
after one warm-up frame; and generate --exclude (both models, one reading pass) end to end.
The segmentation network runs in --seg-dtype (auto: bf16 on a CPU with native bf16, as
`depthprior exclude` does; fp32 gives the figure for CPUs without it); the share of cells
whose best label differs between fp32 and that dtype is printed too (random weights, whose
labels nearly tie everywhere: a bound far above what a trained model's confident scores give).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import inject_blobs, make_scene  # noqa: E402

from depthprior.files.jsonfile import encode_json  # noqa: E402
from depthprior.scene.align import align  # noqa: E402
from depthprior.scene.confidence import check_consistency  # noqa: E402

#: UperNet on ConvNeXt as openmmlab/upernet-convnext-tiny's config.json; "tiny" is no real size
UPERNET = {
    "convnext-tiny": dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], hidden=512, labels=150),
    "tiny": dict(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], hidden=16, labels=4),
}


def build_upernet(arch: str, folder: Path) -> Path:
    import torch
    from transformers import ConvNextConfig, SegformerImageProcessorPil, UperNetConfig, UperNetForSemanticSegmentation

    spec = UPERNET[arch]
    torch.manual_seed(0)
    labels = {i: f"class{i}" for i in range(spec["labels"])}
    labels.update({0: "wall", 2: "sky", 12: "person"} if spec["labels"] > 12 else {1: "sky", 2: "person"})
    backbone = ConvNextConfig(hidden_sizes=spec["hidden_sizes"], depths=spec["depths"],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=spec["hidden"], use_auxiliary_head=True,
                           auxiliary_in_channels=spec["hidden_sizes"][2], id2label=labels,
                           label2id={v: k for k, v in labels.items()})
    UperNetForSemanticSegmentation(config).eval().save_pretrained(folder)
    SegformerImageProcessorPil().save_pretrained(folder)
    return folder


def fit_numbers(root: Path, frames: int, width: int, height: int) -> None:
    scene = make_scene(root, n_images=frames, width=width, height=height, points_per_image=250,
                       write_images=False, seed=3)
    moving = inject_blobs(scene, every=1, seed=3, error=(0.3, 0.6))
    sky = np.zeros((scene.prior_height, scene.prior_width), bool)
    sky[: scene.prior_height // 4] = True
    folder = root / "exclude"
    folder.mkdir()
    entries = {}
    for name in scene.names:
        png = scene.written_prior[name].copy()
        png[sky] = 0
        cv2.imwrite(str(scene.depth_path(name)), png)
        excluded = sky | moving[name]
        cv2.imwrite(str(folder / f"{scene.key(name)}.png"), np.where(excluded, 0, 255).astype(np.uint8))
        entries[name] = {"key": scene.key(name), "status": "ok", "size": list(excluded.shape),
                         "fractions": {"total": float(excluded.mean())}}
    (folder / "exclude.json").write_bytes(encode_json({"version": 1, "identity": {}, "images": entries}))
    fraction = np.mean([entry["fractions"]["total"] for entry in entries.values()])
    print(f"scene: {frames} frames {width}x{height}, excluded {fraction:.1%} of each frame (sky "
          f"{sky.mean():.1%}, moving disc {np.mean([m.mean() for m in moving.values()]):.1%})")
    for method in ("robust", "mad"):
        errors = []
        for exclude in (None, folder):
            summary = align(scene.sparse, scene.depths, method=method, exclude=exclude,
                            output=root / f"{method}-{exclude is not None}.json")
            errors.append(np.mean([scene.inverse_depth_error(r.name, r.scale, r.offset)
                                   for r in summary.results if not r.failed]))
            dropped = np.mean([r.excluded or 0 for r in summary.results])
        print(f"align {method}: fit error {errors[0]:.5f} -> {errors[1]:.5f} with exclusion "
              f"({dropped:.0f} SfM samples per frame left out)")
    params = root / "robust-True.json"
    rejected = []
    for exclude in (None, folder):
        out = root / f"confidence-{exclude is not None}"
        check_consistency(scene.sparse, scene.depths, params=params, output=out, exclude=exclude)
        shares = []
        for name in scene.names:
            mask = cv2.imread(str(out / f"{scene.key(name)}.png"), cv2.IMREAD_UNCHANGED)
            keep = ~(sky | moving[name])
            shares.append((mask[keep] < 128).mean())
        rejected.append(np.mean(shares))
    print(f"consistency: kept pixels rejected {rejected[0]:.1%} -> {rejected[1]:.1%} with exclusion; "
          "excluded pixels 0 in every mask")


def cost_numbers(photos: Path, root: Path, args: argparse.Namespace) -> None:
    from random_model import build as build_depth

    from depthprior.exclusion.run import ExcludeJob, exclude
    from depthprior.exclusion.segmenter import SegmenterSettings, segmentation_dtype
    from depthprior.priors.backends.torch_hf import resolve_device
    from depthprior.priors.pipeline import generate

    seg = build_upernet(args.seg_arch, root / "upernet")
    depth = build_depth(args.depth_arch, root / "depth")
    settings = SegmenterSettings(model=str(seg), device=args.device, dtype=args.seg_dtype,
                                 input_size=args.seg_input_size)
    frames = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    warm = root / "warm"
    warm.mkdir()
    (warm / frames[0].name).write_bytes(frames[0].read_bytes())
    exclude(warm, root / "warm-masks", classes=["sky", "person"], settings=settings)
    generate(warm, root / "warm-depths", model=str(depth), device=args.device, input_size=args.input_size,
             progress=False)
    seg_times, depth_times, both_times = [], [], []
    for repeat in range(args.repeats):
        masks = exclude(photos, root / f"masks{repeat}", classes=["sky", "person"], settings=settings)
        seg_times.append(masks.seconds_per_frame)
        made = generate(photos, root / f"depths{repeat}", model=str(depth), device=args.device,
                        input_size=args.input_size, progress=False)
        depth_times.append(1.0 / made.images_per_s)
        started = time.perf_counter()
        both = generate(photos, root / f"both{repeat}", model=str(depth), device=args.device,
                        input_size=args.input_size, progress=False,
                        exclude=ExcludeJob(("sky", "person"), settings))
        both_times.append((time.perf_counter() - started - both.load_seconds
                           - both.exclusion.load_seconds) / len(frames))
    sizes = sorted({cv2.imread(str(p)).shape[1::-1] for p in frames})
    print(f"cost on {args.device}: {len(frames)} photos {', '.join(f'{w}x{h}' for w, h in sizes)}, "
          f"best of {args.repeats}")
    dtype = segmentation_dtype(args.seg_dtype, resolve_device(args.device))
    print(f"segmentation ({args.seg_arch}, input {args.seg_input_size}, {dtype}): {min(seg_times):.3f} s/frame; "
          f"depth ({args.depth_arch}, input {args.input_size}): {min(depth_times):.3f} s/frame; "
          f"ratio {min(seg_times) / min(depth_times):.2f}")
    print(f"generate --exclude end to end: {min(both_times):.3f} s/frame (both models, one read)")
    if dtype != "fp32":
        print(f"best label differs from fp32 in {label_disagreement(settings, frames):.2%} of the cells ({dtype})")


def label_disagreement(settings, frames: list[Path]) -> float:
    """The share of network cells whose best label differs between fp32 and `settings`' dtype."""
    from dataclasses import replace

    import torch

    from depthprior.exclusion.segmenter import Segmenter

    networks = [Segmenter(replace(settings, dtype=dtype)) for dtype in ("fp32", settings.dtype)]
    differ = total = 0
    for path in frames:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        batch = torch.from_numpy(networks[0].prepare(rgb)[None])
        with torch.inference_mode():
            labels = [net._scores(batch.to(net.dtype)).float().argmax(1) for net in networks]
        differ += int((labels[0] != labels[1]).sum())
        total += labels[0].numel()
    return differ / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--photos", type=Path, default=None, help="time the models on these frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seg-arch", choices=sorted(UPERNET), default="convnext-tiny")
    parser.add_argument("--seg-input-size", type=int, default=256)
    parser.add_argument("--seg-dtype", default="auto", help="the segmentation network's --dtype (auto: bf16 "
                        "on a CPU with native bf16)")
    parser.add_argument("--depth-arch", default="small")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as root:
        fit_numbers(Path(root) / "scene", args.frames, width, height)
        if args.photos is not None:
            cost_numbers(args.photos, Path(root), args)


if __name__ == "__main__":
    main()
