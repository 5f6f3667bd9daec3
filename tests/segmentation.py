"""Tiny random-weight segmentation checkpoints of two architectures (SegFormer; UperNet on
ConvNeXt, the default checkpoint's) saved with save_pretrained, and `forced_logits`, which makes their output follow the frame's
colours: blue is "sky", red is "person", anything else "wall". The real network runs; its
output is replaced after it, at the network's own output size (1/4 of its input)."""

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
