"""The documentation: a page per command with its options from the parser, links that resolve,
and a site that builds strictly (no network)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from depthprior.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _commands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_a_page_whose_options_come_from_the_parser(command):
    page = DOCS / "commands" / f"{command}.md"
    assert page.is_file(), f"no page for {command}"
    assert f"<!-- options: {command} -->" in page.read_text(), page


@pytest.mark.parametrize("document", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md"))])
def test_relative_links_resolve(document):
    path = ROOT / document
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        assert (path.parent / target).exists(), f"{document} links to missing {target}"


def test_readme_is_a_front_page_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q' in text
    assert "depthprior generate scene/images scene/depths" in text


def test_site_builds_strictly_with_generated_options(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                             "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    page = (site / "commands" / "generate" / "index.html").read_text()
    assert "usage: depthprior generate" in page and "--max-pixels" in page
