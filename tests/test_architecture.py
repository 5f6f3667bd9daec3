"""The house rules, checked on the source: no import circle, and one owner per kind of file
(no module outside depthprior/files parses JSON, decodes a picture, or asks "is this a URL")."""

from __future__ import annotations

import ast
import re
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "depthprior"
OWNERS = PACKAGE / "files"

#: what only depthprior/files may do, by the call that does it
OWNED_CALLS = {
    "parses JSON (files.jsonfile)": re.compile(r"\bjson \. loads? \("),
    "decodes a picture (files.raster)": re.compile(r"\bcv2 \. (imread|imdecode) \(|\bImage \. open \("),
    "branches on URLs (files.place)": re.compile(r"(?<!def )\bis_url \("),
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """depthprior modules that `name` imports anywhere (functions too), but for type checking."""
    tree = ast.parse(path.read_text())
    checking = {id(node) for guard in ast.walk(tree) if isinstance(guard, ast.If)
                and "TYPE_CHECKING" in ast.unparse(guard.test) for node in ast.walk(guard)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(root + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {target for target in found if target in modules and target != name}


def test_no_import_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's __init__ re-exporting its children is not a circle of the children
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def _code_lines(path: Path) -> dict[int, str]:
    """Each line's code without its strings and comments (a docstring may name json.loads)."""
    lines: dict[int, list[str]] = {}
    with open(path, "rb") as handle:
        for token in tokenize.tokenize(handle.readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT, tokenize.ENCODING):
                continue
            if getattr(tokenize, "FSTRING_MIDDLE", None) == token.type:
                continue
            lines.setdefault(token.start[0], []).append(token.string)
    return {number: " ".join(parts) for number, parts in lines.items()}


@pytest.mark.parametrize("what", sorted(OWNED_CALLS))
def test_only_the_owners_do_what_they_own(what):
    pattern = OWNED_CALLS[what]
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if OWNERS in path.parents:
            continue
        for number, code in _code_lines(path).items():
            if pattern.search(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {code.strip()}")
    assert not offenders, f"outside depthprior/files, code that {what}:\n" + "\n".join(offenders)


@pytest.mark.xdist_group("guard")
def test_xdist_groups_take_effect(request):
    """Tests of one xdist_group run on one worker (the Ray modules: one Ray instance at a time;
    shared exports made once) only where pytest-xdist can tag their ids: pytest 9.2 reads an id
    pytest-xdist 3.8 does not set, and every group was silently spread over the workers."""
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER") or not request.config.getvalue("loadgroup"):
        pytest.skip("not run by pytest-xdist workers with --dist=loadgroup")
    assert request.node.nodeid.endswith("@guard"), (
        f"{request.node.nodeid}: xdist_group is ignored by this pytest and pytest-xdist; install "
        "the versions pyproject.toml's test extra allows")
