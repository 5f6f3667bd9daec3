"""Per-pixel weights of a prior from one or more mask folders, multiplied: what the trainers'
consumers (training, export) give each pixel.

A folder holding exclude.json is `depthprior exclude`'s (0 excluded, 1 kept; the mask is at the
image's stored size, read at the prior's: same aspect ratio, nearest); any other is
`depthprior consistency`'s (confidence = mask / 255, exactly the prior's size). Both are then
brought to the size asked as the prior is (bilinear, any size or aspect: a render's). A
missing or unusable mask raises MissingPriorError naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

import cv2
import numpy as np

from .confidence import load_mask, statuses
from .priorset import MissingPriorError
from ..errors import UsageError
from ..exclusion.masks import REPORT_NAME as EXCLUDE_REPORT
from ..exclusion.masks import ExclusionFolder, ExclusionMissing

Folders = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]], None]


def folder_list(masks: Folders) -> list[Path]:
    """One folder or several as a list of paths ([] for None)."""
    if masks is None:
        return []
    if isinstance(masks, (str, os.PathLike)):
        return [Path(masks)]
    return [Path(folder) for folder in masks]


class MaskFolders:
    """Mask folders whose weights multiply; see the module doc."""

    def __init__(self, masks: Folders):
        self.folders = folder_list(masks)
        if not self.folders:
            raise UsageError("no mask folder given")
        for folder in self.folders:
            if not folder.is_dir():
                raise UsageError(f"mask folder not found: {folder}; run `depthprior consistency` "
                                 "or `depthprior exclude`")
        self.exclusions = {folder: ExclusionFolder(folder) for folder in self.folders
                           if (folder / EXCLUDE_REPORT).is_file()}
        #: key -> (status, reason) from the consistency folders' consistency.json
        self.statuses: dict[str, tuple[str, str | None]] = {}
        for folder in self.folders:
            if folder not in self.exclusions:
                self.statuses.update(statuses(folder))

    @classmethod
    def of(cls, masks: "Folders | MaskFolders") -> "MaskFolders | None":
        """None when no folder is given; a MaskFolders as it is."""
        if isinstance(masks, MaskFolders):
            return masks
        return cls(masks) if folder_list(masks) else None

    def weight(self, key: str, prior_size: tuple[int, int],
               size: tuple[int, int] | None = None) -> np.ndarray:
        """float32 HxW in [0, 1] at `size` (default the prior's size): the product of every
        folder's weight for the image `key`."""
        target = tuple(size) if size is not None else tuple(prior_size)
        weight = np.ones(target, np.float32)
        for folder in self.folders:
            exclusion = self.exclusions.get(folder)
            if exclusion is None:
                weight *= load_mask(folder, key, prior_size, target)
                continue
            try:  # at the prior's size (whose aspect it must have), then as the prior is resized
                kept = exclusion.weight(key, size=tuple(prior_size))
            except ExclusionMissing as error:
                raise MissingPriorError(str(error)) from None
            if kept.shape != target:
                kept = cv2.resize(kept, (int(target[1]), int(target[0])), interpolation=cv2.INTER_LINEAR)
            weight *= kept
        return weight


__all__ = ["MaskFolders", "folder_list"]
