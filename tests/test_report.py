"""depthprior report: the page's data for a synthetic scene, the HTML, the CLI, and a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE
from scenes import make_scene

from depthprior.errors import UsageError
from depthprior.priors.manifest import ImageRecord, Manifest
from depthprior.priors.store import depth_pngs, read_png16
from depthprior.report import report
from depthprior.report.build import inlier_mask, scatter_samples
from depthprior.report.data import gather
from depthprior.scene.align import align
from depthprior.scene.colmap import read_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROKEN = "broken.jpg"  # a frame generate could not read
CONSTANT = "frame_004.jpg"  # a frame flagged constant
FEW_POINTS = "frame_002.jpg"  # a failed fit: 5 SfM points
OFF_SCALE = "frame_005.jpg"  # an unreliable fit: its prior is a tenth of the others'
MASKED = ("frame_000.jpg", "frame_001.jpg")


def _manifest(scene) -> None:
    manifest = Manifest(root=scene.depths, identity={"model": "synthetic-model", "backend": "torch",
                                                     "input_size": 518}, inputs=str(scene.images))
    for name in scene.names:
        key = scene.key(name)
        flags = ["constant"] if name == CONSTANT else []
        manifest.images[name] = ImageRecord(
            status="ok", stem=key, outputs=[key + ".png"], width=scene.prior_width,
            height=scene.prior_height, raw_min=0.0, raw_max=1.0, levels=60000,
            precision_bits=15.9, flags=flags)
    manifest.images[BROKEN] = ImageRecord.failed("cannot decode the image")
    manifest.save()


def _masks(scene, root: Path) -> Path:
    masks = root / "masks"
    masks.mkdir()
    for name in MASKED:
        mask = np.full((scene.prior_height, scene.prior_width), 255, np.uint8)
        mask[:, : scene.prior_width // 4] = 0  # a quarter rejected
        cv2.imwrite(str(masks / (scene.key(name) + ".png")), mask)
    return masks


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-scene")
    scene = make_scene(root, n_images=8, corrupt=0.1, few_points={2: 5})
    off = scene.depth_path(OFF_SCALE)
    cv2.imwrite(str(off), (read_png16(off) // 10).astype(np.uint16))
    _manifest(scene)
    scene.align = align(scene.sparse, scene.depths, allow_missing=True)
    scene.masks = _masks(scene, root)
    return scene


def _by_name(data):
    return {frame.name: frame for frame in data.frames}


# ---------------------------------------------------------------- the page's data

def test_data_statuses_reasons_and_fits(scene):
    data = gather(scene.depths, sparse=scene.sparse, masks=scene.masks)
    frames = _by_name(data)
    assert len(data.frames) == len(scene.names) + 1
    assert frames[BROKEN].status == "failed" and "cannot decode" in frames[BROKEN].reasons[0]
    assert frames[FEW_POINTS].status == "failed"
    assert "only 5 usable SfM points" in frames[FEW_POINTS].fit.reason
    assert frames[CONSTANT].status == "flagged"
    assert frames[OFF_SCALE].status == "unreliable"
    assert "median" in frames[OFF_SCALE].fit.reason
    assert "scale outlier" in frames[OFF_SCALE].marks
    assert frames["frame_000.jpg"].status == "ok" and not frames["frame_000.jpg"].marks
    aligned = {r.key: r for r in scene.align.results}
    for frame in data.frames:
        if frame.name != BROKEN:
            fit, result = frame.fit, aligned[frame.key]
            assert (fit.status, fit.scale, fit.points, fit.inliers) == (
                result.status, result.scale, result.points, result.inliers)
    assert data.fit_counts() == {"ok": 6, "unreliable": 1, "failed": 1}
    assert data.counts() == {"images": 9, "done": 8, "failed": 1, "flagged": 1}
    assert data.status_counts() == {"failed": 2, "flagged": 1, "unreliable": 1, "ok": 5}


def test_data_masks_and_consistency(scene, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(scene.masks, masks)
    assert gather(scene.depths, masks=masks).consistency is None  # no file: nothing said
    (masks / "consistency.json").write_text(json.dumps(
        {"scene": {"tae_before": 0.05, "tae_after": 0.02}, "per_image": {}}))
    data = gather(scene.depths, masks=masks)
    assert data.consistency == {"tae_before": 0.05, "tae_after": 0.02}
    with_mask = {f.name for f in data.frames if f.mask is not None}
    assert with_mask == set(MASKED)


def test_data_without_sparse_model(scene):
    data = gather(scene.depths)
    assert data.fit_counts() is None and data.params is None
    assert all(frame.fit is None for frame in data.frames)
    assert {f.name for f in data.frames if f.status == "failed"} == {BROKEN}
    assert all(f.photo is not None for f in data.frames if f.name != BROKEN)


def test_scatter_inliers_are_the_reported_ones(scene):
    model = read_model(scene.sparse)
    image = next(i for i in model.images if i.name == "frame_001.jpg")
    result = next(r for r in scene.align.results if r.name == "frame_001.jpg")
    prior, target = scatter_samples(model, image, read_png16(scene.depth_path(image.name)), "robust")
    assert prior.size == result.points
    inlier = inlier_mask(prior, target, result.scale, result.offset, result.inliers)
    assert int(inlier.sum()) == result.inliers
    residual = np.abs(result.scale * prior + result.offset - target) / target
    assert np.median(residual[inlier]) == pytest.approx(result.residual, rel=1e-6)


# ---------------------------------------------------------------- the page

def _cards(html: str) -> list[tuple[str, str]]:
    """(status, id) of every card in page order."""
    return re.findall(r'<article class="card (\w+)" id="(frame-\d+)"', html)


def test_page_cards_problems_first_and_jpeg_assets(scene, tmp_path):
    page = tmp_path / "out" / "scene.html"
    before = set(depth_pngs(scene.depths))
    summary = report(scene.depths, sparse=scene.sparse, masks=scene.masks)
    html = summary.path.read_text(encoding="utf-8")
    cards = _cards(html)
    assert len(cards) == summary.frames == 9
    assert [s for s, _ in cards[:3]] == ["failed", "failed", "flagged"]
    assert "only 5 usable SfM points" in html and "cannot decode the image" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network
    assets = sorted(p.name for p in summary.assets.iterdir())
    assert assets and all(name.endswith(".jpg") for name in assets)
    assert sum(name.endswith("-fit.jpg") for name in assets) == 8  # every frame with a prior and an entry
    assert sum(name.endswith("-mask.jpg") for name in assets) == len(MASKED)
    for src in re.findall(r'<img loading="lazy" src="([^"]+)"', html):
        assert (summary.path.parent / src).is_file()
    assert set(depth_pngs(scene.depths)) == before  # align and the exports see no new "priors"
    other = report(scene.depths, output=page)  # elsewhere, without a model
    assert "No SfM model given" in other.path.read_text(encoding="utf-8")
    assert not any(p.name.endswith("-fit.jpg") for p in other.assets.iterdir())


def test_rerun_replaces_only_its_own_pictures(scene, tmp_path):
    page = tmp_path / "r.html"
    first = report(scene.depths, sparse=scene.sparse, output=page)
    keep = first.assets / "notes.txt"
    keep.write_text("mine")
    report(scene.depths, output=page)
    assert keep.read_text() == "mine"
    assert not any(p.name.endswith("-fit.jpg") for p in first.assets.iterdir())


@pytest.mark.hostile
def test_an_assets_folder_that_is_a_link_is_refused(scene, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / "00000-photo.jpg"  # named like a picture the report would replace
    precious.write_bytes(b"precious")
    page = tmp_path / "r.html"
    (tmp_path / "r_files").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UsageError, match="is a link"):
        report(scene.depths, output=page)
    assert precious.read_bytes() == b"precious" and not page.exists()


@pytest.mark.hostile
def test_hostile_numbers_and_names_stay_inert(scene, tmp_path):
    sparse = tmp_path / "sparse"
    shutil.copytree(scene.sparse, sparse)
    params = json.loads((sparse / "depth_params.json").read_text())
    params["frame_003"]["offset"] = float("nan")
    params["frame_006"]["offset"] = -1e308
    (sparse / "depth_params.json").write_text(json.dumps(params))
    depths = tmp_path / "depths"
    shutil.copytree(scene.depths, depths, ignore=shutil.ignore_patterns("report*"))
    manifest = Manifest.load(depths)
    hostile = 'x"<script>alert(1)</script>&.jpg'
    manifest.images[hostile] = ImageRecord.failed("<b>bad</b>")
    manifest.save()
    summary = report(depths, sparse=sparse)
    html = summary.path.read_text(encoding="utf-8")
    frames = _by_name(gather(depths, sparse=sparse))
    assert frames["frame_003.jpg"].status == frames["frame_006.jpg"].status == "unreliable"
    assert "<script>alert" not in html and "<b>bad</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    numbers = re.findall(r'data-(?:scale|offset|inliers|residual)="([^"]*)"', html)
    assert numbers and all(v == "" or np.isfinite(float(v)) for v in numbers)


# ---------------------------------------------------------------- the CLI

def test_cli_bad_inputs_are_one_line(scene, cli, tmp_path):
    cases = [
        ("report", str(tmp_path / "missing")),
        ("report", str(scene.images)),  # not a depthprior output folder
        ("report", str(scene.depths), "--sparse", str(tmp_path)),  # no depth_params.json there
        ("report", str(scene.depths), "--images", str(tmp_path / "nowhere")),
        ("report", str(scene.depths), "-o", str(tmp_path / "page.txt")),
    ]
    for args in cases:
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("depthprior report: error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_cli_report_prints_where_it_wrote(scene, cli, tmp_path):
    page = tmp_path / "page.html"
    result = cli("report", scene.depths, "--sparse", scene.sparse, "-o", page)
    assert result.returncode == 0, result.stderr
    assert f"wrote {page}" in result.stdout and "file://" in result.stdout
    assert len(_cards(page.read_text(encoding="utf-8"))) == 9


def test_generate_report_writes_the_page(tiny_model, cli, tmp_path):
    scene = make_scene(tmp_path / "scene", n_images=4, write_images=True)
    out = tmp_path / "depths"
    result = cli("generate", scene.images, out, "--model", tiny_model, "--input-size",
                 str(TEST_INPUT_SIZE), "--no-progress", "--align", scene.sparse, "--report")
    assert result.returncode in (0, 1), result.stderr  # random weights: fits may fail
    page = out / "report.html"
    assert f"wrote {page}" in result.stdout
    html = page.read_text(encoding="utf-8")
    assert len(_cards(html)) == 4 and "depth_params.json" in html


# ---------------------------------------------------------------- a real browser

@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="Chromium and chromedriver are not installed (.ci/run installs them)")
def test_page_in_headless_chromium(scene, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    summary = report(scene.depths, sparse=scene.sparse, masks=scene.masks,
                     output=tmp_path / "report.html")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(summary.path.resolve().as_uri())
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
        assert len(cards) == summary.frames
        Select(driver.find_element(By.ID, "filter")).select_by_value("failed")
        shown = [c for c in cards if c.is_displayed()]
        assert len(shown) == 2 and all(c.get_attribute("data-status") == "failed" for c in shown)
        Select(driver.find_element(By.ID, "filter")).select_by_value("all")
        Select(driver.find_element(By.ID, "sort")).select_by_value("scale")
        order = [c.get_attribute("data-scale") for c in
                 driver.find_elements(By.CSS_SELECTOR, "article.card") if c.get_attribute("data-scale")]
        assert [float(v) for v in order] == sorted(float(v) for v in order)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        screenshot = cv2.imdecode(np.frombuffer(driver.get_screenshot_as_png(), np.uint8),
                                  cv2.IMREAD_GRAYSCALE)
    finally:
        driver.quit()
    assert screenshot.shape[0] > 100 and float(screenshot.std()) > 10  # not blank
