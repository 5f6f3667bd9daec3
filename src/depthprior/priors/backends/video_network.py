"""Video Depth Anything's network as depthprior's own module: transformers' Depth Anything
(DINOv2 encoder, DPT neck and head; the same modules the torch backend runs) plus the four
temporal modules the official DPTHeadTemporal inserts, and the explicit map from the official
state dict's keys to it.

The official checkpoints (video_depth_anything_vit{s,b,l}.pth, metric_... the same layout) are
plain state dicts; `load_state` accepts exactly their keys: a missing or unexpected key is a
ModelLoadError naming it. Sizes come from the tensors' shapes, so every size (and the tests'
tiny models) loads by one rule.

Where the temporal modules sit (as the reference): after the reassemble stage on the third and
fourth feature maps, and after the first two fusion blocks. Each is a residual block: group
norm, a linear in, per pixel two self-attentions over the window's frames (sinusoidal position
encoding added to the input of each) and a GEGLU feed-forward, a linear out. Its output
projection starts at zero, so an untrained temporal module is the identity and the network is
Depth Anything V2 frame by frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ...errors import ModelLoadError, listing

#: DINOv2's attention head width: heads = embedding width / 64 for every size
HEAD_WIDTH = 64
#: the encoder layers whose outputs feed the head, by encoder depth (the reference's table);
#: other depths (test models) take the last layer of each quarter
INTERMEDIATE_LAYERS = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23)}
#: the temporal modules' attention heads and GroupNorm groups (fixed in the reference)
TEMPORAL_HEADS = 8
TEMPORAL_GROUPS = 32
#: frames per pass through the full-resolution end of the head (the reference's micro-batch)
MICRO_BATCH = 4
#: official sizes by embedding width: (name, licence)
SIZES = {384: ("Small", "Apache-2.0"), 768: ("Base", "CC-BY-NC-4.0"), 1024: ("Large", "CC-BY-NC-4.0")}


@dataclass(frozen=True)
class VideoConfig:
    """The sizes of one checkpoint, read from its tensors' shapes."""

    embed_dim: int
    depth: int
    mlp_dim: int
    patch: int
    grid: int  # side of the trained position-embedding grid (37 for 518 px)
    out_channels: tuple[int, int, int, int]
    features: int
    head_features: int
    frames: int  # temporal_max_len: the window the temporal position encoding covers
    temporal_blocks: int

    @property
    def heads(self) -> int:
        return max(1, self.embed_dim // HEAD_WIDTH)

    @property
    def layers(self) -> tuple[int, ...]:
        if self.depth in INTERMEDIATE_LAYERS:
            return INTERMEDIATE_LAYERS[self.depth]
        return tuple(round((k + 1) * self.depth / 4) - 1 for k in range(4))

    @property
    def size_name(self) -> str | None:
        return SIZES.get(self.embed_dim, (None, None))[0]

    @property
    def licence(self) -> str | None:
        return SIZES.get(self.embed_dim, (None, None))[1]


def read_config(state: dict[str, Any], model: str) -> VideoConfig:
    """The sizes of a state dict in the official layout, or a ModelLoadError saying it is not one."""
    try:
        pos = state["pretrained.pos_embed"]
        depth = 1 + max(int(m.group(1)) for key in state if (m := re.match(r"pretrained\.blocks\.(\d+)\.", key)))
        blocks = 1 + max(int(m.group(1)) for key in state if (m := re.match(
            r"head\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\.", key)))
        config = VideoConfig(
            embed_dim=int(pos.shape[2]), depth=depth,
            mlp_dim=int(state["pretrained.blocks.0.mlp.fc1.weight"].shape[0]),
            patch=int(state["pretrained.patch_embed.proj.weight"].shape[2]),
            grid=int(round(math.sqrt(int(pos.shape[1]) - 1))),
            out_channels=tuple(int(state[f"head.projects.{i}.weight"].shape[0]) for i in range(4)),
            features=int(state["head.scratch.layer1_rn.weight"].shape[0]),
            head_features=int(state["head.scratch.output_conv2.0.weight"].shape[0]),
            frames=int(state["head.motion_modules.0.temporal_transformer.transformer_blocks.0"
                             ".attention_blocks.0.pos_encoder.pe"].shape[1]),
            temporal_blocks=blocks,
        )
    except (KeyError, ValueError, AttributeError, IndexError, TypeError) as error:
        raise ModelLoadError(f"model {model!r} is not a Video Depth Anything checkpoint in the official "
                             f"layout (no {error}); give video_depth_anything_vit*.pth or its hub id") from None
    return config


# ---------------------------------------------------------------- the key map

#: transformers' names of a DINOv2 layer's attention projections: q, k, v, out (5.x, then 4.x)
ATTENTION_NAMES = (("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
                   ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                    "attention.output.dense"))


def attention_names(keys: Any) -> tuple[str, str, str, str]:
    """The attention names this transformers gives a DINOv2 layer, from the network's keys."""
    return next((names for names in ATTENTION_NAMES
                 if f"depth.backbone.encoder.layer.0.{names[0]}.weight" in keys), ATTENTION_NAMES[0])


def key_map(config: VideoConfig, attention: tuple[str, ...] = ATTENTION_NAMES[0]) -> list[tuple[str, str, int | None]]:
    """(official key, depthprior key, part): part is None for a rename, or the third (0, 1, 2)
    of a fused qkv tensor that the official DINOv2 stores in one."""
    rows: list[tuple[str, str, int | None]] = []

    def add(official: str, ours: str, suffixes: tuple[str, ...] = ("weight", "bias")) -> None:
        rows.extend((f"{official}.{s}" if s else official, f"{ours}.{s}" if s else ours, None) for s in suffixes)

    embeddings = "depth.backbone.embeddings"
    add("pretrained.cls_token", f"{embeddings}.cls_token", ("",))
    add("pretrained.mask_token", f"{embeddings}.mask_token", ("",))
    add("pretrained.pos_embed", f"{embeddings}.position_embeddings", ("",))
    add("pretrained.patch_embed.proj", f"{embeddings}.patch_embeddings.projection")
    for i in range(config.depth):
        block, layer = f"pretrained.blocks.{i}", f"depth.backbone.encoder.layer.{i}"
        add(f"{block}.norm1", f"{layer}.norm1")
        for part, name in enumerate(attention[:3]):
            rows.extend((f"{block}.attn.qkv.{s}", f"{layer}.{name}.{s}", part) for s in ("weight", "bias"))
        add(f"{block}.attn.proj", f"{layer}.{attention[3]}")
        add(f"{block}.ls1.gamma", f"{layer}.layer_scale1.lambda1", ("",))
        add(f"{block}.norm2", f"{layer}.norm2")
        add(f"{block}.mlp.fc1", f"{layer}.mlp.fc1")
        add(f"{block}.mlp.fc2", f"{layer}.mlp.fc2")
        add(f"{block}.ls2.gamma", f"{layer}.layer_scale2.lambda1", ("",))
    add("pretrained.norm", "depth.backbone.layernorm")
    for i in range(4):
        add(f"head.projects.{i}", f"depth.neck.reassemble_stage.layers.{i}.projection")
        if i != 2:  # the third resize is the identity
            add(f"head.resize_layers.{i}", f"depth.neck.reassemble_stage.layers.{i}.resize")
        add(f"head.scratch.layer{i + 1}_rn", f"depth.neck.convs.{i}", ("weight",))
        fusion, refine = f"depth.neck.fusion_stage.layers.{3 - i}", f"head.scratch.refinenet{i + 1}"
        add(f"{refine}.out_conv", f"{fusion}.projection")
        for unit in (1, 2):
            for conv in (1, 2):
                add(f"{refine}.resConfUnit{unit}.conv{conv}", f"{fusion}.residual_layer{unit}.convolution{conv}")
    add("head.scratch.output_conv1", "depth.head.conv1")
    add("head.scratch.output_conv2.0", "depth.head.conv2")
    add("head.scratch.output_conv2.2", "depth.head.conv3")
    for m in range(4):
        temporal = f"head.motion_modules.{m}.temporal_transformer"
        ours = f"motion_modules.{m}.temporal_transformer"
        for name in ("norm", "proj_in", "proj_out"):
            add(f"{temporal}.{name}", f"{ours}.{name}")
        for b in range(config.temporal_blocks):
            block = f"transformer_blocks.{b}"
            for a in range(2):
                attention = f"{block}.attention_blocks.{a}"
                for name in ("to_q", "to_k", "to_v"):
                    add(f"{temporal}.{attention}.{name}", f"{ours}.{attention}.{name}", ("weight",))
                add(f"{temporal}.{attention}.to_out.0", f"{ours}.{attention}.to_out.0")
                add(f"{temporal}.{attention}.pos_encoder.pe", f"{ours}.{attention}.pos_encoder.pe", ("",))
                add(f"{temporal}.{block}.norms.{a}", f"{ours}.{block}.norms.{a}")
            add(f"{temporal}.{block}.ff.net.0.proj", f"{ours}.{block}.ff.net.0.proj")
            add(f"{temporal}.{block}.ff.net.2", f"{ours}.{block}.ff.net.2")
            add(f"{temporal}.{block}.ff_norm", f"{ours}.{block}.ff_norm")
    return rows


def official_keys(config: VideoConfig) -> set[str]:
    return {official for official, _, _ in key_map(config)}


def to_ours(state: dict[str, Any], config: VideoConfig, model: str,
            attention: tuple[str, ...] = ATTENTION_NAMES[0]) -> dict[str, Any]:
    """The official state dict under depthprior's names; exactly the official keys accepted."""
    expected = official_keys(config)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing key(s) {listing(missing, 4, quote=True)}")
        if unexpected:
            problems.append(f"unexpected key(s) {listing(unexpected, 4, quote=True)}")
        raise ModelLoadError(f"model {model!r} does not hold a Video Depth Anything state dict: "
                             f"{'; '.join(problems)}")
    ours: dict[str, Any] = {}
    for official, name, part in key_map(config, attention):
        tensor = state[official]
        ours[name] = tensor if part is None else tensor.chunk(3, dim=0)[part]
    return ours


def to_official(ours: dict[str, Any], config: VideoConfig) -> dict[str, Any]:
    """The inverse of to_ours (tests and the parity benchmark save models in the official layout)."""
    import torch

    state: dict[str, Any] = {}
    fused: dict[str, list[Any]] = {}
    for official, name, part in key_map(config, attention_names(ours)):
        if part is None:
            state[official] = ours[name].detach().clone()
        else:
            fused.setdefault(official, [None, None, None])[part] = ours[name].detach()
    state.update({key: torch.cat(parts, dim=0).clone() for key, parts in fused.items()})
    return state


# ---------------------------------------------------------------- the network

def build_network(config: VideoConfig) -> Any:
    """A VideoDepthNetwork of these sizes (random weights, temporal output projections zero)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from .torch_hf import follow_reference_position_resize

    backbone = Dinov2Config(
        hidden_size=config.embed_dim, num_hidden_layers=config.depth, num_attention_heads=config.heads,
        mlp_ratio=config.mlp_dim // config.embed_dim, patch_size=config.patch,
        image_size=config.grid * config.patch, reshape_hidden_states=False, layerscale_value=1.0,
        out_features=[f"stage{i + 1}" for i in config.layers], layer_norm_eps=1e-6,
    )
    depth_config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=config.embed_dim, reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=list(config.out_channels), fusion_hidden_size=config.features,
        head_hidden_size=config.head_features, patch_size=config.patch, depth_estimation_type="relative",
        max_depth=1,
    )
    depth = DepthAnythingForDepthEstimation(depth_config).eval()
    follow_reference_position_resize(depth)
    network = _network_class(torch)(depth, config)
    return network.eval()


def _network_class(torch: Any) -> type:
    nn, F = torch.nn, torch.nn.functional

    class PositionEncoding(nn.Module):
        def __init__(self, width: int, length: int):
            super().__init__()
            position = torch.arange(length).unsqueeze(1)
            rate = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
            pe = torch.zeros(1, length, width)
            pe[0, :, 0::2] = torch.sin(position * rate)
            pe[0, :, 1::2] = torch.cos(position * rate)
            self.register_buffer("pe", pe)

        def forward(self, x: Any) -> Any:
            return x + self.pe[:, :x.shape[1]].to(x.dtype)

    class TemporalAttention(nn.Module):
        """Self-attention over the frames of each pixel: (pixels, frames, width) in and out."""

        def __init__(self, width: int, frames: int):
            super().__init__()
            self.heads = TEMPORAL_HEADS
            self.to_q = nn.Linear(width, width, bias=False)
            self.to_k = nn.Linear(width, width, bias=False)
            self.to_v = nn.Linear(width, width, bias=False)
            self.to_out = nn.ModuleList([nn.Linear(width, width), nn.Dropout(0.0)])
            self.pos_encoder = PositionEncoding(width, frames)

        def forward(self, x: Any) -> Any:
            x = self.pos_encoder(x)
            rows, frames, width = x.shape

            def heads(t: Any) -> Any:
                return t.reshape(rows, frames, self.heads, width // self.heads).transpose(1, 2)

            out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x)))
            return self.to_out[0](out.transpose(1, 2).reshape(rows, frames, width))

    class GEGLU(nn.Module):
        def __init__(self, width: int, inner: int):
            super().__init__()
            self.proj = nn.Linear(width, inner * 2)

        def forward(self, x: Any) -> Any:
            x, gate = self.proj(x).chunk(2, dim=-1)
            return x * F.gelu(gate)

    class FeedForward(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.net = nn.ModuleList([GEGLU(width, 4 * width), nn.Dropout(0.0), nn.Linear(4 * width, width)])

        def forward(self, x: Any) -> Any:
            for module in self.net:
                x = module(x)
            return x

    class TemporalBlock(nn.Module):
        def __init__(self, width: int, frames: int):
            super().__init__()
            self.attention_blocks = nn.ModuleList([TemporalAttention(width, frames) for _ in range(2)])
            self.norms = nn.ModuleList([nn.LayerNorm(width) for _ in range(2)])
            self.ff = FeedForward(width)
            self.ff_norm = nn.LayerNorm(width)

        def forward(self, x: Any, frames: int) -> Any:
            # x: (batch * frames, pixels, width) -> attention over frames per pixel
            batch_frames, pixels, width = x.shape
            for attention, norm in zip(self.attention_blocks, self.norms):
                per_pixel = norm(x).reshape(-1, frames, pixels, width).transpose(1, 2).reshape(-1, frames, width)
                out = attention(per_pixel).reshape(-1, pixels, frames, width).transpose(1, 2)
                x = x + out.reshape(batch_frames, pixels, width)
            return x + self.ff(self.ff_norm(x))

    class TemporalTransformer(nn.Module):
        def __init__(self, channels: int, frames: int, blocks: int):
            super().__init__()
            self.norm = nn.GroupNorm(TEMPORAL_GROUPS, channels, eps=1e-6, affine=True)
            self.proj_in = nn.Linear(channels, channels)
            self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, frames) for _ in range(blocks)])
            self.proj_out = nn.Linear(channels, channels)
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

        def forward(self, x: Any, frames: int) -> Any:
            batch_frames, channels, height, width = x.shape
            hidden = self.norm(x).permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
            hidden = self.proj_in(hidden)
            for block in self.transformer_blocks:
                hidden = block(hidden, frames)
            hidden = self.proj_out(hidden).reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2)
            return hidden + x

    class TemporalModule(nn.Module):
        def __init__(self, channels: int, frames: int, blocks: int):
            super().__init__()
            self.temporal_transformer = TemporalTransformer(channels, frames, blocks)

        def forward(self, x: Any, frames: int) -> Any:
            return self.temporal_transformer(x, frames)

    class VideoDepthNetwork(nn.Module):
        """(batch * frames, 3, H, W) normalised frames of `frames`-long windows -> (batch * frames,
        H, W) relative disparity (or metric depth), H and W multiples of the patch."""

        def __init__(self, depth: Any, config: VideoConfig):
            super().__init__()
            self.config = config
            self.depth = depth
            channels = (config.out_channels[2], config.out_channels[3], config.features, config.features)
            self.motion_modules = nn.ModuleList(
                [TemporalModule(c, config.frames, config.temporal_blocks) for c in channels])

        def forward(self, pixel_values: Any, frames: int) -> Any:
            depth, motion = self.depth, self.motion_modules
            height, width = pixel_values.shape[-2:]
            rows, cols = height // self.config.patch, width // self.config.patch
            features = depth.backbone(pixel_values).feature_maps
            layers = depth.neck.reassemble_stage(list(features), rows, cols)
            layers[2] = motion[0](layers[2], frames)
            layers[3] = motion[1](layers[3], frames)
            rn = [conv(layer) for conv, layer in zip(depth.neck.convs, layers)]
            fusion = depth.neck.fusion_stage.layers
            path = motion[2](fusion[0](rn[3], size=rn[2].shape[2:]), frames)
            path = motion[3](fusion[1](path, rn[2], size=rn[1].shape[2:]), frames)
            # the high-resolution rest a few frames at a time (the reference's micro-batches):
            # its activations at full resolution would take gigabytes for a whole window
            return torch.cat([self._finish(path[i:i + MICRO_BATCH], rn[1][i:i + MICRO_BATCH],
                                           rn[0][i:i + MICRO_BATCH], rows, cols)
                              for i in range(0, path.shape[0], MICRO_BATCH)])

        def _finish(self, path: Any, rn2: Any, rn1: Any, rows: int, cols: int) -> Any:
            fusion, head = self.depth.neck.fusion_stage.layers, self.depth.head
            path = fusion[2](path, rn2, size=rn1.shape[2:])
            path = fusion[3](path, rn1, size=None)
            out = head.conv1(path)
            out = F.interpolate(out, (rows * self.config.patch, cols * self.config.patch), mode="bilinear",
                                align_corners=True)
            with torch.autocast(device_type=out.device.type, enabled=False):  # as the reference: float
                out = head.conv3(F.relu(head.conv2(out.float())))
            return F.relu(out).squeeze(1)

    return VideoDepthNetwork


def load_state_into(network: Any, state: dict[str, Any], model: str) -> None:
    """Official weights into a network of the same config (exactly the official keys)."""
    ours = to_ours(state, network.config, model, attention_names(network.state_dict()))
    try:
        result = network.load_state_dict(ours, strict=True)
    except RuntimeError as error:  # a shape that disagrees with the rest of the checkpoint
        raise ModelLoadError(f"cannot load weights of {model!r}: {str(error).splitlines()[-1].strip()}") from None
    del result
