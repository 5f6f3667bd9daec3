"""Video Depth Anything: the official key layout, the network's structure, and its loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEST_INPUT_SIZE
from depthprior.errors import ModelLoadError
from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.backends.video_depth import VideoDepthModel, load_video_network, read_state, video_input_size
from depthprior.priors.backends.video_network import official_keys, read_config
from synth import build_tiny_video_network, save_official, scene_rgb, tiny_video_config

#: keys of the official layout, spelled out as in video_depth_anything_vits.pth
OFFICIAL_SAMPLES = (
    "pretrained.cls_token", "pretrained.pos_embed", "pretrained.mask_token", "pretrained.patch_embed.proj.weight",
    "pretrained.blocks.0.attn.qkv.weight", "pretrained.blocks.3.ls2.gamma", "pretrained.norm.bias",
    "head.projects.0.weight", "head.resize_layers.3.bias", "head.scratch.layer4_rn.weight",
    "head.scratch.refinenet1.resConfUnit2.conv1.weight", "head.scratch.output_conv2.2.bias",
    "head.motion_modules.3.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight",
    "head.motion_modules.2.temporal_transformer.proj_out.weight",
)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return save_official(build_tiny_video_network(), tmp_path_factory.mktemp("vda") / "video_depth_anything_t.pth")


def test_official_layout_loads_with_no_missing_or_unexpected_key(official):
    state = torch.load(official, weights_only=True)
    assert set(OFFICIAL_SAMPLES) <= set(state)
    assert "head.resize_layers.2.weight" not in state  # the identity resize holds nothing
    assert set(state) == official_keys(read_config(state, "m"))
    network = load_video_network(str(official))
    reloaded = torch.load(save_official(network, official.parent / "again.pth"), weights_only=True)
    assert all(torch.equal(state[key], reloaded[key]) for key in state)


def test_foreign_state_dicts_are_one_line_naming_the_keys(official, tmp_path):
    state = torch.load(official, weights_only=True)
    state["head.extra.weight"] = torch.zeros(1)
    del state["pretrained.blocks.1.mlp.fc1.bias"]
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ModelLoadError) as caught:
        load_video_network(str(tmp_path / "odd.pth"))
    message = str(caught.value)
    assert "\n" not in message
    assert "'pretrained.blocks.1.mlp.fc1.bias'" in message and "'head.extra.weight'" in message
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(ModelLoadError, match="not a Video Depth Anything checkpoint"):
        load_video_network(str(tmp_path / "foreign.pth"))
    (tmp_path / "broken.pth").write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        read_state(str(tmp_path / "broken.pth"))


@pytest.mark.hostile
def test_files_that_are_no_checkpoint_say_so_and_never_advise_unsafe_loading(tmp_path):
    """Before: 'EOFError', '101', or torch's paragraph advising weights_only=False (unsafe)."""
    import collections
    import pickle

    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("101 reasons\n")
    (tmp_path / "code.pth").write_bytes(pickle.dumps(collections.OrderedDict))  # a class, not tensors
    for name in ("empty.pth", "text.pth", "code.pth"):
        with pytest.raises(ModelLoadError) as caught:
            read_state(str(tmp_path / name))
        message = str(caught.value)
        assert "\n" not in message and f"{name} is not a Video Depth Anything checkpoint" in message
        assert "weights_only" not in message and "official .pth" in message


def test_hub_id_offline_is_the_usual_cannot_load_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot load model 'depth-anything/Video-Depth-Anything-Small'"):
        read_state("depth-anything/Video-Depth-Anything-Small")


def test_untrained_temporal_modules_give_depth_anything_frame_by_frame(tmp_path):
    """Zero output projections: each frame of a one-window sequence equals today's Depth
    Anything torch backend on the same DA-V2 weights."""
    network = build_tiny_video_network(temporal=False)
    network.depth.save_pretrained(tmp_path / "da-v2")
    path = save_official(network, tmp_path / "video_depth_anything_t.pth")
    settings = BackendSettings(model=str(path), device="cpu", input_size=TEST_INPUT_SIZE)
    video = VideoDepthModel(settings)
    frames = [scene_rgb(42, 56, seed=i) for i in range(5)]
    maps = video.run_window([video.prepare(f, TEST_INPUT_SIZE) for f in frames])
    with create_backend("torch", BackendSettings(model=str(tmp_path / "da-v2"), device="cpu",
                                                 input_size=TEST_INPUT_SIZE)) as torch_backend:
        expected = torch_backend.predict(frames)
    for frame, raw, reference in zip(frames, maps, expected):
        ours = video.finish(raw, *frame.shape[:2]).values
        span = float(reference.values.max() - reference.values.min())
        assert span > 0
        assert np.abs(ours - reference.values).max() <= 1e-5 * span


def test_trained_temporal_modules_make_frames_depend_on_their_neighbours(official):
    video_network = load_video_network(str(official))
    frames = [scene_rgb(42, 56, seed=i) for i in range(4)]
    from depthprior.priors.backends.preprocess import prepare_rgb

    inputs = torch.from_numpy(np.stack([prepare_rgb(f, TEST_INPUT_SIZE) for f in frames]))
    changed = inputs.clone()
    changed[3] = torch.from_numpy(prepare_rgb(scene_rgb(42, 56, seed=9), TEST_INPUT_SIZE))
    with torch.no_grad():
        before, after = video_network(inputs, 4), video_network(changed, 4)
    assert not torch.allclose(before[0], after[0], rtol=0, atol=1e-6 * float(before[0].abs().max()))
    with torch.no_grad():  # and frame by frame, the same frame alone is another map
        alone = video_network(inputs[:1], 1)
    assert not torch.allclose(before[0], alone[0])


def test_the_licence_of_non_small_checkpoints_is_said_once(caplog):
    from depthprior.priors.backends.video_depth import _tell_licence

    for _ in range(2):
        _tell_licence("depth-anything/Video-Depth-Anything-Large", "Large", "CC-BY-NC-4.0")
        _tell_licence("depth-anything/Video-Depth-Anything-Small", "Small", "Apache-2.0")
    said = [r.getMessage() for r in caplog.records if "released under" in r.getMessage()]
    assert said == ["depth-anything/Video-Depth-Anything-Large is Video Depth Anything-Large, released under "
                    "CC-BY-NC-4.0 (non-commercial use only)"]


def test_wide_frames_get_the_reference_smaller_input_size():
    assert video_input_size(480, 640, 518) == 518
    assert video_input_size(1080, 1920, 518) == 518  # 1.778 < 1.78
    assert video_input_size(100, 400, 518) == round(int(518 * 1.777 / 4) / 14) * 14
    assert tiny_video_config().heads == 1
