"""depthprior bench: bare forward vs end to end, interleaved rounds, the pipeline baseline."""

from __future__ import annotations

import re

import pytest

from conftest import TEST_INPUT_SIZE
from depthprior.priors.backends import BackendSettings
from depthprior.priors.bench import BenchReport, BenchRow, bench, merge_rounds
from depthprior.errors import UsageError
from synth import make_frames


def row(label: str, e2e: float, forward: float | None = None, rss: float = 100.0) -> BenchRow:
    return BenchRow(label, images=3, load_s=1.0, forward_s=forward, e2e_s=e2e, peak_rss_mb=rss)


def test_rounds_merge_to_medians_and_ratios_to_medians_of_per_round_ratios():
    merged = merge_rounds([row("torch", 1.0, 0.5, 90), row("torch", 3.0, 2.0, 120), row("torch", 2.0, 1.0)])
    assert (merged.e2e_s, merged.forward_s, merged.peak_rss_mb, merged.rounds) == (2.0, 1.0, 120, 3)
    # per-round e2e/forward: 2.0, 1.5, 2.0 -> 2.0 (the ratio of the medians would also be 2.0)
    assert merged.ratio == pytest.approx(2.0)
    slow = merge_rounds([row("slow", 1.5), row("slow", 4.5), row("slow", 2.2)])
    # per round slow/torch: 1.5, 1.5, 1.1 -> 1.5, although the medians alone give 1.1
    assert slow.speedup_over(merged) == pytest.approx(1 / 1.5) and merged.speedup_over(slow) == pytest.approx(1.5)
    text = BenchReport([merged, slow]).format()
    assert "medians over 3 interleaved rounds" in text
    assert "torch is 1.50x faster end to end than slow" in text
    assert re.search(r"torch\s+3\s+1\.0\s+1000\.0\s+2000\.0\s+2\.000\s+0\.50\s+120\s+1000-3000", text), text


def test_single_round_report_has_no_spread_column():
    text = BenchReport([row("torch", 0.5, 0.4), row("transformers pipeline", 1.0)]).format()
    assert "min-max" not in text and "rounds" not in text
    assert "torch is 2.00x faster end to end than transformers pipeline" in text


def test_bench_times_backends_and_the_pipeline_loop_in_interleaved_rounds(tiny_model, tmp_path):
    frames = tmp_path / "frames"
    make_frames(frames, count=3, size=(48, 64))
    settings = BackendSettings(model=str(tiny_model), input_size=TEST_INPUT_SIZE)
    report = bench(frames, backends=["torch"], settings=settings, baseline=True, repeats=2)
    torch_row, baseline = report.rows
    assert (torch_row.label, baseline.label) == ("torch", "transformers pipeline")
    assert torch_row.images == baseline.images == 3
    assert torch_row.rounds == baseline.rounds == 2
    assert torch_row.forward_s > 0 and torch_row.e2e_s > 0 and torch_row.ratio > 0
    assert baseline.forward_s is None and baseline.ratio is None
    assert torch_row.peak_rss_mb > 50 and baseline.peak_rss_mb > 50
    assert torch_row.details["backend"] == "torch"


def test_cli_bench_compares_torch_and_onnx(tiny_model, tmp_path, cli):
    pytest.importorskip("onnxruntime")
    from depthprior.priors.onnx_export import export_onnx

    onnx_file = export_onnx(str(tiny_model), tmp_path / "tiny.onnx", input_size=TEST_INPUT_SIZE,
                            exporter="torchscript").path
    frames = tmp_path / "frames"
    make_frames(frames, count=2, size=(48, 64))
    result = cli("bench", frames, "--model", tiny_model, "--input-size", TEST_INPUT_SIZE,
                 "--backends", "torch,onnx", "--onnx-model", onnx_file, "--repeats", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("torch ") for line in lines) and any(line.startswith("onnx ") for line in lines)
    assert "medians over 2 interleaved rounds" in result.stdout
    assert re.search(r"^(torch|onnx) is \d+\.\d\dx faster end to end than (onnx|torch)$", result.stdout, re.M)


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--backends", "torch,tpu"], "unknown backend(s) tpu"),
])
def test_cli_bench_rejects_bad_options(tiny_model, tmp_path, cli, args, message):
    frames = tmp_path / "frames"
    make_frames(frames, count=1)
    result = cli("bench", frames, "--model", tiny_model, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_bench_without_images_fails_before_loading_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        bench(tmp_path / "empty", settings=BackendSettings(model=str(tmp_path / "no-such-model")))


def test_comparison_names_the_faster_by_per_round_ratio_even_against_the_medians():
    # medians: a 2.0 < b 2.1, but round by round b beats a in two of three rounds
    a = merge_rounds([row("a", 1.0), row("a", 2.0), row("a", 3.0)])
    b = merge_rounds([row("b", 2.1), row("b", 1.8), row("b", 2.7)])
    text = BenchReport([a, b]).format()
    assert "b is 1.11x faster end to end than a" in text and "0." not in text.splitlines()[-1]


def test_bare_forward_warms_every_shape_once_and_times_each_batch(tiny_model, tmp_path):
    from depthprior.priors.backends import create_backend
    from depthprior.priors.bench import _bare_forward
    from depthprior.images import discover
    from synth import scene_rgb, write_image

    for name, size in [("a", (48, 64)), ("b", (48, 64)), ("c", (64, 48)), ("d", (48, 64))]:
        write_image(tmp_path / f"{name}.png", scene_rgb(*size))
    settings = BackendSettings(model=str(tiny_model), input_size=TEST_INPUT_SIZE, batch_size=2)
    with create_backend("torch", settings) as engine:
        calls = []
        infer = engine.infer
        engine.infer = lambda batch: calls.append(len(batch)) or infer(batch)
        assert _bare_forward(engine, discover(tmp_path)) > 0
    # batches: [a, b] (landscape, 2), [c] (portrait, 1), [d] (landscape, 1): three new shapes
    assert calls == [2, 2, 1, 1, 1, 1]


def test_every_contender_times_the_one_scan_of_the_folder(tiny_model, tmp_path, monkeypatch):
    import os

    frames = tmp_path / "frames"
    make_frames(frames, count=2, size=(48, 64))
    listed, original, target = [], os.scandir, str(frames.resolve())

    def scandir(path=".", *args):
        if not isinstance(path, int) and os.path.realpath(path) == target:
            listed.append(path)
        return original(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    settings = BackendSettings(model=str(tiny_model), input_size=TEST_INPUT_SIZE)
    report = bench(frames, backends=["torch"], settings=settings, baseline=True, repeats=2)
    assert [(row.label, row.images, row.rounds) for row in report.rows] == [
        ("torch", 2, 2), ("transformers pipeline", 2, 2)]
    assert len(listed) == 1  # bare forward, end to end and the baseline share one discovery
