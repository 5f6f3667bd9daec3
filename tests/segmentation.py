"""Tiny random-weight segmentation checkpoints of three architectures (SegFormer; UperNet on
ConvNeXt, the default checkpoint's; Mask2Former on Swin, whose output is per-query classes and
masks) saved with save_pretrained, and `forced_logits` / `forced_queries`, which make their output
follow the frame's colours: blue is "sky", red is "person", anything else "wall". The real network
runs; its output is replaced after it, at the network's own output size."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

LABELS = {0: "wall", 1: "sky", 2: "person;individual;someone", 3: "car"}
SKY, PERSON = (0, 0, 255), (255, 0, 0)
#: a frame whose regions lie on the 8-pixel grid of the networks' output at input size 32
FRAME = (64, 128)


def frame(size: tuple[int, int] = FRAME) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, sky, person): grey with a sky band on top and a person block, on an 8-pixel grid."""
    height, width = size
    rgb = np.full((height, width, 3), 128, np.uint8)
    sky = np.zeros((height, width), bool)
    sky[: height // 4] = True
    person = np.zeros((height, width), bool)
    person[height // 2: height * 3 // 4, width * 3 // 8: width * 5 // 8] = True
    rgb[sky], rgb[person] = SKY, PERSON
    return rgb, sky, person


def build_segformer(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil

    torch.manual_seed(seed)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2],
                             mlp_ratios=[2, 2], decoder_hidden_size=16, id2label=LABELS,
                             label2id={v: k for k, v in LABELS.items()})
    SegformerForSemanticSegmentation(config).eval().save_pretrained(folder)
    SegformerImageProcessorPil().save_pretrained(folder)
    return folder


def build_upernet(folder: Path, seed: int = 0) -> Path:
    """UperNet on ConvNeXt: the default checkpoint's architecture (openmmlab/upernet-convnext-tiny)."""
    import torch
    from transformers import ConvNextConfig, SegformerImageProcessorPil, UperNetConfig, UperNetForSemanticSegmentation

    torch.manual_seed(seed)
    backbone = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=16,
                           auxiliary_channels=8, use_auxiliary_head=False, id2label=LABELS,
                           label2id={v: k for k, v in LABELS.items()})
    UperNetForSemanticSegmentation(config).eval().save_pretrained(folder)
    SegformerImageProcessorPil(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(folder)
    return folder


def build_mask2former(folder: Path, seed: int = 0) -> Path:
    """Mask2Former on a tiny Swin (GroupNorm(32) in its pixel decoder wants 32 channels); 4
    queries. Building it needs scipy (its Hungarian matcher), nothing downloaded."""
    import torch
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation,
                              Mask2FormerImageProcessorPil, SwinConfig)

    torch.manual_seed(seed)
    backbone = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=1, dim_feedforward=32, num_queries=len(QUERIES),
                               id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    Mask2FormerForUniversalSegmentation(config).eval().save_pretrained(folder)
    Mask2FormerImageProcessorPil().save_pretrained(folder)
    return folder


#: per query of `forced_queries`: (its class, the colour class whose cells its mask covers; None
#: for every cell). The last is "no object" (label 4 = len(LABELS)) over the whole frame, the
#: second last a doubtful "car" (class 0.4 car, 0.6 no object) everywhere: neither may win a pixel.
QUERIES = ((1, 1), (2, 2), (0, 0), ("car?", None), (len(LABELS), None))


def _colour_classes(pixel_values, size):
    """Per cell of an output of `size`: 1 where the frame is blue, 2 red, else 0 (wall)."""
    import torch

    cells = torch.nn.functional.interpolate(pixel_values.float(), size=size, mode="area")
    red, blue = cells[:, 0], cells[:, 2]
    classes = torch.zeros_like(red, dtype=torch.long)
    classes[blue - red > 1.0] = 1
    classes[red - blue > 1.0] = 2
    return classes


@contextmanager
def forced_logits() -> Iterator[None]:
    """Both architectures' outputs follow the frame's colours while the block runs: the logits
    are replaced at the size the network gave them (SegFormer 1/4 of its input, UperNet full)."""
    import torch
    from transformers import SegformerForSemanticSegmentation, UperNetForSemanticSegmentation

    originals = {cls: cls.forward for cls in (SegformerForSemanticSegmentation, UperNetForSemanticSegmentation)}

    def forced(original):
        def forward(self, pixel_values=None, **kwargs):
            outputs = original(self, pixel_values=pixel_values, **kwargs)
            classes = _colour_classes(pixel_values, outputs.logits.shape[-2:])
            onehot = torch.nn.functional.one_hot(classes, len(LABELS)).permute(0, 3, 1, 2)
            outputs.logits = (onehot.float() * 20 - 10).to(outputs.logits.dtype)
            return outputs
        return forward

    for cls, original in originals.items():
        cls.forward = forced(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.forward = original


@contextmanager
def forced_queries(seen: list | None = None) -> Iterator[None]:
    """Mask2Former's class and mask queries follow the frame's colours while the block runs
    (QUERIES), at the mask size the network gave (1/4 of its input); `seen` collects each
    forward's outputs (for transformers' own post-processing)."""
    import torch
    from transformers import Mask2FormerForUniversalSegmentation

    original = Mask2FormerForUniversalSegmentation.forward

    def forward(self, pixel_values=None, **kwargs):
        outputs = original(self, pixel_values=pixel_values, **kwargs)
        cells = _colour_classes(pixel_values, outputs.masks_queries_logits.shape[-2:])
        classes = torch.full(outputs.class_queries_logits.shape, -10.0)
        masks = torch.empty(outputs.masks_queries_logits.shape)
        for query, (label, region) in enumerate(QUERIES):
            if label == "car?":
                classes[:, query, 3], classes[:, query, len(LABELS)] = np.log(0.4), np.log(0.6)
            else:
                classes[:, query, label] = 10.0
            masks[:, query] = 10.0 if region is None else (cells == region).float() * 20 - 10
        outputs.class_queries_logits = classes.to(outputs.class_queries_logits.dtype)
        outputs.masks_queries_logits = masks.to(outputs.masks_queries_logits.dtype)
        if seen is not None:
            seen.append(outputs)
        return outputs

    Mask2FormerForUniversalSegmentation.forward = forward
    try:
        yield
    finally:
        Mask2FormerForUniversalSegmentation.forward = original
