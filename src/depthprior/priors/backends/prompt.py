"""Prompt depth for Prompt Depth Anything from a COLMAP sparse model (--prompt-sparse).

Each image's prompt is the depth of the SfM points it observes (scene.sampling.observations:
registered pose, points in front of the camera and inside its image), splatted into a
low-resolution grid the shape of the image, the nearest point kept per cell, and the empty
cells filled with the depth of the nearest filled cell: a dense map like the LiDAR depth the
model was trained with. Values are in the model's units (metres when the SfM scene is metric):
the network min-max normalises the prompt per image and maps its output back to the prompt's
range, so the prediction comes out in those units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...errors import ImageError
from ...images import image_key

#: the longer side of the prompt grid: the 256x192 LiDAR depth of the ARKit captures the released
#: checkpoints were trained with (images smaller than that keep their own size)
PROMPT_LONG_SIDE = 256


def sparse_model_digest(path: str | Path) -> str:
    """A digest of the model files a prompt is read from (the format COLMAP would read)."""
    from ...scene.colmap import MODEL_FILES, model_format
    from ..fingerprint import files_digest

    path = Path(path)
    suffix = ".bin" if model_format(path) == "binary" else ".txt"
    return files_digest([(path / stem).with_suffix(suffix) for stem in MODEL_FILES])


def check_sparse_option(options: Any) -> Any:
    """A backend's options with --prompt-sparse, when given, naming a COLMAP model folder (a
    ModelError, exit 2, otherwise)."""
    if getattr(options, "prompt_sparse", None) is not None:
        from ...scene.colmap import model_format

        model_format(Path(options.prompt_sparse))
    return options


def prompt_identity(options: Any) -> dict[str, str]:
    """The output identity's part for --prompt-sparse: the digest of the model it reads."""
    if getattr(options, "prompt_sparse", None) is None:
        return {}
    return {"prompt_sparse": sparse_model_digest(options.prompt_sparse)}


def prompt_size(height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of an image's prompt grid: its aspect, the longer side PROMPT_LONG_SIDE."""
    scale = min(1.0, PROMPT_LONG_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class SparsePrompts:
    """The prompts of one COLMAP model, by image name."""

    path: Path
    model: Any  # scene.colmap.SparseModel
    by_name: dict[str, Any]  # ModelImage by its name in the model
    by_key: dict[str, Any]  # ModelImage by its name without extension (when unique)

    @classmethod
    def read(cls, path: str | Path, max_pixels: int) -> "SparsePrompts":
        """The model in `path`, read and checked (scene.colmap.read_model; a ModelError otherwise)."""
        from ...scene.colmap import read_model

        model = read_model(Path(path), max_pixels)
        keys: dict[str, list[Any]] = {}
        for image in model.images:
            keys.setdefault(image.key, []).append(image)
        return cls(Path(path), model, {image.name: image for image in model.images},
                   {key: found[0] for key, found in keys.items() if len(found) == 1})

    def image(self, name: str) -> Any:
        """The model's image for an input name (same name, else same name without extension)."""
        image = self.by_name.get(name) or self.by_key.get(image_key(name))
        if image is None:
            raise ImageError(f"{name or 'a picture without a name'} is not an image of the COLMAP model {self.path}: no SfM points "
                             "to prompt it with (pass the images folder the model was made from)")
        if not image.registered:
            raise ImageError(f"{name} is not registered in the COLMAP model {self.path} (no pose): "
                             "no SfM points to prompt it with")
        return image

    def depth(self, name: str, height: int, width: int) -> np.ndarray:
        """The prompt depth of image `name` (height x width pixels): a dense float32 grid of
        prompt_size(height, width), in the model's units."""
        from ...scene.sampling import observations

        image = self.image(name)
        xy, inverse = observations(self.model, image)
        if inverse.size == 0:
            raise ImageError(f"{name} sees no SfM points in front of its camera in {self.path}: "
                             "nothing to prompt it with")
        rows, cols = prompt_size(height, width)
        scale = np.array([cols / image.camera.width, rows / image.camera.height])
        cells = np.floor(xy * scale).astype(np.int64)
        cells = np.clip(cells, 0, [cols - 1, rows - 1])
        return fill_nearest(splat_nearest(cells, 1.0 / inverse, rows, cols))


def splat_nearest(cells: np.ndarray, depth: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A rows x cols grid holding, per cell, the smallest depth of the points in it; 0 elsewhere."""
    grid = np.full(rows * cols, np.inf)
    np.minimum.at(grid, cells[:, 1] * cols + cells[:, 0], depth)
    grid[~np.isfinite(grid)] = 0.0
    return grid.reshape(rows, cols)


def fill_nearest(grid: np.ndarray) -> np.ndarray:
    """Empty (0) cells take the value of the nearest filled cell (Euclidean; cv2's Voronoi labels,
    off by at most a fraction of a cell at near-ties)."""
    empty = grid <= 0
    if not empty.any():
        return grid.astype(np.float32)
    _, labels = cv2.distanceTransformWithLabels(empty.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    seeds = grid[~empty]  # DIST_LABEL_PIXEL numbers the filled cells 1.. in raster order
    return seeds[labels - 1].astype(np.float32)


def network_prompt(depth: np.ndarray) -> np.ndarray:
    """1 x h x w float32 as the model's image processor gives it (prompt_scale_to_meter applied
    before: our depth is in the model's units already); a constant prompt gets 1e-6 added to its
    first cell, as the processor does, so the network's min-max normalisation is defined."""
    prompt = np.array(depth, dtype=np.float32)[None]
    if prompt.min() == prompt.max():
        prompt[0, 0, 0] += 1e-6
    return prompt
