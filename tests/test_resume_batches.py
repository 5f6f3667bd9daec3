"""A folder begun at one --batch-size resumes at another (docs/formats.md, Resume): the batch
size is not part of the output identity, and the frames made before are kept, not redone."""

from __future__ import annotations

from conftest import TEST_INPUT_SIZE
from depthprior import generate
from depthprior.priors.manifest import Manifest
from synth import make_frames, scene_rgb, write_image


def test_a_rerun_at_another_batch_size_keeps_the_frames_made_before(tmp_path, tiny_model):
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2, size=(40, 60))
    settings = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, device="cpu", dtype="fp32", progress=False)
    first = generate(frames, out, batch_size=1, **settings)
    assert first.done == 2
    before = {png.name: png.read_bytes() for png in out.glob("*.png")}
    for index in (2, 3):
        write_image(frames / f"frame_{index:04d}.jpg", scene_rgb(40, 60, seed=index))
    again = generate(frames, out, batch_size=4, **settings)
    assert (again.done, again.skipped, again.exit_code) == (2, 2, 0)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not {"batch_size", "device"} & set(Manifest.load(out).identity)
