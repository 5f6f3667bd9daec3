"""A semantic-segmentation model through transformers, by hub id or local folder, and the class
names it knows.

Any checkpoint AutoModelForSemanticSegmentation loads (SegFormer, UperNet, DPT, BEiT, MobileViT,
...) gives per-class logits; Mask2Former and MaskFormer give per-query classes and masks, whose
semantic scores are sum_q softmax(class_q)[c] * sigmoid(mask_q) (Mask2Former's mask logits
first resized to 384x384, as transformers' post_process_semantic_segmentation does).
`Segmenter.groups` answers, per pixel at the image's stored size, which requested class group
wins: the label whose bilinearly resized score is highest there (what
post_process_semantic_segmentation's argmax gives), computed without 150 full-size score planes:
a quad of four score cells whose bounds leave one group able to win gives every pixel it blends
that group; only the pixels of the other quads, at the requested groups' edges, blend every label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelLoadError, UsageError
from ..priors.backends.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..priors.backends.torch_hf import (_quiet_transformers, import_torch, load_config, processor_class,
                                        resolve_device, resolve_dtype, torch_dtype)

#: MIT licence (OpenMMLab), ADE20K's 150 classes (sky, person, car, ...); docs/commands/exclude.md
DEFAULT_MODEL = "openmmlab/upernet-convnext-tiny"
DEFAULT_CLASSES = ("sky", "person")
#: shorter side the network sees, rounded to SIZE_STEP. ADE20K models are trained on 512 crops,
#: but UperNet-ConvNeXt-T at 512 costs 2.2x Depth-Anything-V2-Small's time per frame on a CPU;
#: at 256, 0.34x in bf16 and 0.70x in fp32 (docs/performance.md). Sky and people near the camera
#: keep their shape; pass 512 for small, distant people.
DEFAULT_INPUT_SIZE = 256
SIZE_STEP = 32
#: the largest --seg-input-size: the network's score planes (150 ADE20K labels, float32) of one
#: 2048-pixel square frame already take 2.5 GB, and a 16:1 frame 16 times that
MAX_INPUT_SIZE = 2048
#: checkpoints whose output is per-query classes and masks (the semantic scores are combined)
QUERY_MODELS = ("mask2former", "maskformer")
#: Mask2Former's post-processing resizes the mask logits to this size before the sigmoid
MASK2FORMER_MASK_SIZE = (384, 384)
#: label-score values held at once while blending the pixels near a requested group's edge
BLEND_BUDGET = 1 << 24
#: versions of the preprocessing and mask rules: a change makes earlier masks another identity
SEGMENTATION_VERSION = 2  # 2: the argmax of resized label scores, not of group maxima

#: a name asked for -> the label names it also means, across ADE20K, Cityscapes and COCO labels
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sky": ("sky-other-merged", "sky-other", "sky-other-merged-stuff"),
    "person": ("people", "human", "pedestrian", "individual", "someone", "somebody"),
    "people": ("person",),
    "pedestrian": ("person",),
    "human": ("person",),
    "car": ("automobile", "machine", "motorcar"),
    "bicycle": ("bike",),
    "bike": ("bicycle",),
    "motorcycle": ("motorbike",),
    "motorbike": ("motorcycle",),
    "animal": ("animal", "dog", "cat", "horse", "bird", "cow", "sheep"),
}


def _words(label: str) -> set[str]:
    """The names a label goes by: ADE20K's "person;individual;someone" is three."""
    return {part.strip().lower() for part in re.split(r"[;,]", str(label)) if part.strip()}


def resolve_classes(requested: Sequence[str], id2label: dict[int, str], model: str,
                    option: str = "--classes") -> dict[str, list[int]]:
    """Each requested name -> the label ids it means (its own name, or a synonym, matching any of
    a label's names); UsageError in one line listing the model's labels for an unknown name.
    Names meaning the same label ids (people, person) are one class, under the first one given."""
    names = [name.strip().lower() for name in requested if name.strip()]
    if not names:
        raise UsageError(f"{option} is empty: name at least one class (e.g. sky,person)")
    resolved: dict[str, list[int]] = {}
    for name in dict.fromkeys(names):
        wanted = {name, *SYNONYMS.get(name, ())}
        ids = sorted(i for i, label in id2label.items() if _words(label) & wanted)
        if not ids:
            known = ", ".join(str(id2label[i]) for i in sorted(id2label))
            raise UsageError(f"model {model!r} has no class {name!r}; it knows: {known}")
        if ids not in resolved.values():
            resolved[name] = ids
    return resolved


@dataclass(frozen=True)
class SegmenterSettings:
    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    input_size: int = DEFAULT_INPUT_SIZE
    batch_size: int = 1

    def check(self) -> None:
        from ..priors.backends.base import require_number

        require_number("seg_input_size", self.input_size, int)
        require_number("batch_size", self.batch_size, int)
        used = nearest_step(self.input_size)  # the bounds hold for the size the network is given
        if not SIZE_STEP <= used <= MAX_INPUT_SIZE:
            why = ("" if used < SIZE_STEP else "; more would take tens of gigabytes of segmentation "
                   "scores per frame (ADE20K models are trained at 512)")
            raise UsageError(f"--seg-input-size {self.input_size} is {used} to the nearest multiple of "
                             f"{SIZE_STEP}, outside {SIZE_STEP} to {MAX_INPUT_SIZE}: give "
                             f"{SIZE_STEP // 2} to {MAX_INPUT_SIZE + SIZE_STEP // 2 - 1}{why}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, not {self.batch_size}")


def nearest_step(size: int) -> int:
    """The multiple of SIZE_STEP nearest to a size, halves up (16 is 32, 2063 is 2048, 2064 is 2080)."""
    return (size + SIZE_STEP // 2) // SIZE_STEP * SIZE_STEP


def used_input_size(size: Any) -> Any:
    """A --seg-input-size as the network uses it (33 is 32, 48 is 64); an identity's value that
    is not a size is compared as it is."""
    if isinstance(size, bool) or not isinstance(size, int):
        return size
    return max(SIZE_STEP, nearest_step(size))


def labels_of(settings: SegmenterSettings) -> tuple[dict[int, str], str]:
    """The checkpoint's id2label and model_type from its config alone (nothing heavy loads);
    ModelLoadError in one line for a checkpoint that is not a segmentation model."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
                                                        MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES)

    config = load_config(settings.model, settings.revision, task="semantic-segmentation")
    model_type = getattr(config, "model_type", None)
    known = set(MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES) | set(QUERY_MODELS)
    if model_type not in known:
        kind = "universal" if model_type in MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES else "not"
        why = ("its semantic output needs a task prompt depthprior does not build"
               if kind == "universal" else "not a semantic-segmentation model")
        raise ModelLoadError(f"model {settings.model!r} is a {model_type or 'unknown'!r} checkpoint, {why}; "
                             f"choose a checkpoint of one of: {', '.join(sorted(known))}")
    id2label = {int(i): str(label) for i, label in (getattr(config, "id2label", None) or {}).items()}
    if not id2label:
        raise ModelLoadError(f"model {settings.model!r} names no classes (its config has no id2label)")
    return id2label, model_type


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX, AVX512-BF16): there a bf16 network runs
    about 3x faster than fp32; elsewhere bf16 is emulated and slower."""
    torch = import_torch()
    probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    try:
        return any(probe() for probe in probes if probe is not None)
    except (RuntimeError, AttributeError):  # a torch without these probes: assume not
        return False


def segmentation_dtype(requested: str, device: str) -> str:
    """The dtype a checked --dtype means for the segmentation network: auto is fp16 on CUDA and
    bf16 on a CPU with native bf16, fp32 elsewhere. A mask is each pixel's best label, which
    half precision moves only where two labels nearly tie (at class edges), as on a GPU."""
    if requested == "auto" and device == "cpu" and native_bf16():
        return "bf16"
    return resolve_dtype(requested, device)


def identity(settings: SegmenterSettings, classes: dict[str, list[int]]) -> dict[str, Any]:
    """What masks depend on: the checkpoint (and a local folder's files), input size, the dtype
    the network runs in, classes (their label ids, sorted: the names that resolved to them do
    not change a mask)."""
    dtype = segmentation_dtype(settings.dtype, resolve_device(settings.device))
    found: dict[str, Any] = {"model": settings.model, "revision": settings.revision,
                             "input_size": used_input_size(settings.input_size), "dtype": dtype,
                             "version": SEGMENTATION_VERSION, "classes": class_ids(classes)}
    if Path(settings.model).is_dir():  # a local folder: its name does not pin its weights
        from ..priors.fingerprint import folder_digest

        found["weights"] = folder_digest(settings.model)
    return found


def class_ids(classes: Any) -> Any:
    """The identity's classes: the sorted list of each class's sorted label ids. An identity
    written as {name: ids} (before names stopped counting) reads as the same ids."""
    groups = classes.values() if isinstance(classes, dict) else classes
    try:
        return sorted(sorted(int(i) for i in ids) for ids in groups)
    except (TypeError, ValueError):
        return classes  # not ids: compared as it is (another identity)


class Segmenter:
    """A loaded segmentation checkpoint: batches of RGB frames -> group index per pixel."""

    def __init__(self, settings: SegmenterSettings):
        settings.check()
        self.settings = settings
        self.id2label, self.model_type = labels_of(settings)
        torch = import_torch()
        self.torch = torch
        self.device = resolve_device(settings.device)
        self.dtype = torch_dtype(segmentation_dtype(settings.dtype, self.device))
        self.mean, self.std, self.scale = _normalisation(self.model_type, settings)
        self.network = _load_network(settings, self.model_type, self.dtype).to(self.device)
        #: oneDNN's bf16 convolutions on a CPU run ~25% faster on channels-last tensors (fp32 not)
        self.memory_format = (torch.channels_last if self.device == "cpu" and self.dtype == torch.bfloat16
                              else torch.contiguous_format)
        self.network = self.network.to(memory_format=self.memory_format)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network sees: shorter side the used input size, aspect kept, both
        multiples of SIZE_STEP."""
        ratio = used_input_size(self.settings.input_size) / min(height, width)
        return tuple(max(SIZE_STEP, int(round(side * ratio / SIZE_STEP)) * SIZE_STEP)  # type: ignore[return-value]
                     for side in (height, width))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """An HxWx3 uint8 RGB frame as the network's normalised CHW float32 input."""
        import cv2

        height, width = self.network_size(*image.shape[:2])
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA
                             if height < image.shape[0] else cv2.INTER_LINEAR)
        values = resized.astype(np.float32) * self.scale
        values = (values - self.mean) / self.std
        return np.ascontiguousarray(values.transpose(2, 0, 1))

    def groups(self, prepared: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
               classes: dict[str, list[int]]) -> list[np.ndarray]:
        """Per frame, an HxW uint8 at its stored size `sizes[i]`: 0 where a label outside every
        group wins, k where the k-th group of `classes` wins. Frames of one batch share a shape."""
        torch = self.torch
        batch = torch.from_numpy(np.stack(prepared)).to(self.device, self.dtype,
                                                          memory_format=self.memory_format)
        with torch.inference_mode():
            scores = self._scores(batch).float().contiguous()  # B x labels x h x w, row-major
            lookup = _group_lookup(scores.shape[1], list(classes.values()), torch).to(scores.device)
            return [_group_map(scores[index], height, width, lookup, torch).cpu().numpy()
                    for index, (height, width) in enumerate(sizes)]

    def _scores(self, batch: Any) -> Any:
        outputs = self.network(pixel_values=batch)
        if self.model_type in QUERY_MODELS:
            classes = outputs.class_queries_logits.float().softmax(-1)[..., :-1]  # the last is "no object"
            logits = outputs.masks_queries_logits.float()
            if self.model_type == "mask2former":
                logits = self.torch.nn.functional.interpolate(logits, size=MASK2FORMER_MASK_SIZE,
                                                              mode="bilinear", align_corners=False)
            return self.torch.einsum("bqc,bqhw->bchw", classes, logits.sigmoid())
        return outputs.logits


def _group_lookup(labels: int, groups: list[list[int]], torch: Any) -> Any:
    """label id -> 1 + the first group holding it, 0 for a label in none."""
    lookup = torch.zeros(labels, dtype=torch.uint8)
    for number, ids in reversed(list(enumerate(groups, 1))):
        lookup[[i for i in ids if i < labels]] = number
    return lookup


def _source_cells(size: int, out: int, torch: Any, device: Any) -> tuple[Any, Any, Any]:
    """Per output index, the two source cells and the second's weight of a bilinear resize with
    half-pixel centres, in float32 as torch.nn.functional.interpolate (align_corners=False)
    computes them, so near-ties fall the same way."""
    scale = torch.tensor(size, dtype=torch.float32) / out
    place = (scale * (torch.arange(out, device=device).float() + 0.5) - 0.5).clamp(min=0)
    first = place.long().clamp(max=size - 1)
    second = (first + 1).clamp(max=size - 1)
    return first, second, (place - first).clamp(0, 1)


#: a quad whose pixels may fall to more than one group (_quad_groups)
MIXED = 255


def _group_maxima(scores: Any, lookup: Any, torch: Any) -> Any:
    """groups x rows x cols: per cell, the highest score of each group's labels (-inf for a
    group without labels); group 0 (the labels in none) taken from the cell's best where that
    is one of them, so only the cells a requested label wins look at all labels again."""
    labels, rows, cols = scores.shape
    flat = scores.reshape(labels, rows * cols)
    best_value, best = flat.max(0)
    maxima = torch.full((int(lookup.max()) + 1, rows * cols), float("-inf"), device=scores.device)
    for group in range(1, maxima.shape[0]):
        members = torch.nonzero(lookup == group)[:, 0]
        if len(members):
            maxima[group] = flat[members].amax(0)
    others = lookup == 0
    if others.any():
        maxima[0] = best_value
        taken = torch.nonzero(lookup[best] != 0)[:, 0]
        chunk = max(1, BLEND_BUDGET // labels)
        for part in range(0, len(taken), chunk):
            cells = taken[part:part + chunk]
            maxima[0, cells] = flat.index_select(1, cells).masked_fill(~others[:, None], float("-inf")).amax(0)
    return maxima.reshape(-1, rows, cols), best.reshape(rows, cols)


def _quad_groups(scores: Any, lookup: Any, torch: Any) -> Any:
    """rows x cols uint8: per quad of four neighbouring cells (r, c), (r, c+1), (r+1, c), (r+1, c+1)
    (clamped at the last row and column), the group every pixel blended from it takes, or MIXED.
    A pixel's blend of a label lies between its lowest and highest score over the four cells:
    the winner's blend reaches the lowest score of each corner's best label (the floor), and
    no label of a group reaches above the group's highest score over the corners; when one
    group alone reaches the floor, every pixel of the quad falls to it, whatever its weights."""
    labels, rows, cols = scores.shape
    maxima, best = _group_maxima(scores, lookup, torch)
    down = torch.arange(rows, device=scores.device).add(1).clamp(max=rows - 1)
    right = torch.arange(cols, device=scores.device).add(1).clamp(max=cols - 1)
    cell = torch.arange(rows * cols, device=scores.device).reshape(rows, cols)
    corners = (cell, cell[:, right], cell[down], cell[down][:, right])
    flat = scores.reshape(-1)
    floor = None
    for corner in corners:
        offset = best.reshape(-1)[corner] * (rows * cols)
        lowest = torch.stack([flat[offset + other] for other in corners]).amin(0)
        floor = lowest if floor is None else torch.maximum(floor, lowest)
    margin = 1e-5 * float(scores.abs().amax())  # rounding in a blend: a near-tie stays a candidate
    reached = torch.stack([maxima[group].reshape(-1)[torch.stack(corners)].amax(0) >= floor - margin
                           for group in range(maxima.shape[0])])
    single = reached.sum(0) == 1
    return torch.where(single, reached.to(torch.uint8).argmax(0).to(torch.uint8), MIXED)


def _group_map(scores: Any, height: int, width: int, lookup: Any, torch: Any) -> Any:
    """HxW uint8: the group of the label with the highest bilinearly resized score per pixel.
    A pixel whose quad of cells decides its group (_quad_groups) takes it; the others, near the
    requested groups' edges, blend every label's four cells as the resize does."""
    labels, rows, cols = scores.shape
    if (rows, cols) == (height, width):
        return lookup[scores.argmax(0)]
    y0, y1, wy = _source_cells(rows, height, torch, scores.device)
    x0, x1, wx = _source_cells(cols, width, torch, scores.device)
    quads = _quad_groups(scores, lookup, torch)
    flat = scores.reshape(labels, rows * cols)
    result = quads[y0][:, x0]
    chunk = max(1, BLEND_BUDGET // (4 * labels))
    step = max(1, BLEND_BUDGET // (4 * width))  # rows whose mixed pixels are listed at once
    for start in range(0, height, step):
        ys, xs = torch.nonzero(result[start:start + step] == MIXED, as_tuple=True)
        for part in range(0, len(ys), chunk):
            y, x = ys[part:part + chunk] + start, xs[part:part + chunk]
            a, b = wy[y], wx[x]
            upper, lower = y0[y] * cols, y1[y] * cols
            blend = ((1 - a) * ((1 - b) * flat[:, upper + x0[x]] + b * flat[:, upper + x1[x]])
                     + a * ((1 - b) * flat[:, lower + x0[x]] + b * flat[:, lower + x1[x]]))
            result[y, x] = lookup[blend.argmax(0)]
    return result


def _normalisation(model_type: str, settings: SegmenterSettings) -> tuple[np.ndarray, np.ndarray, float]:
    """The checkpoint's processor's mean, std and rescale factor (ImageNet's when it has none)."""
    mean, std, scale = IMAGENET_MEAN, IMAGENET_STD, 1 / 255
    try:
        processor = processor_class(model_type).from_pretrained(settings.model, revision=settings.revision)
    except (ModelLoadError, OSError, ValueError):
        processor = None
    if processor is not None:
        if getattr(processor, "do_normalize", True) is False:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean = getattr(processor, "image_mean", None) or mean
            std = getattr(processor, "image_std", None) or std
        if getattr(processor, "do_rescale", True) is False:
            scale = 1.0
        else:
            scale = float(getattr(processor, "rescale_factor", None) or scale)
    return (np.asarray(mean, np.float32).reshape(1, 1, 3), np.asarray(std, np.float32).reshape(1, 1, 3),
            scale)


def _load_network(settings: SegmenterSettings, model_type: str, dtype: Any) -> Any:
    from transformers import AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation

    loader = AutoModelForUniversalSegmentation if model_type in QUERY_MODELS else AutoModelForSemanticSegmentation
    _quiet_transformers()
    try:
        network = loader.from_pretrained(settings.model, revision=settings.revision, dtype=dtype)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - OSError, a truncated safetensors file, ...
        from ..errors import first_line

        raise ModelLoadError(f"cannot load weights of {settings.model!r}: {first_line(error)}") from None
    if getattr(network, "auxiliary_head", None) is not None:  # a training aid (UperNet, BEiT): its
        network.auxiliary_head = None  # logits are computed on every forward and never used here
    return network.eval()
