"""MkDocs hook: `<!-- options: generate -->` (or `export nerfstudio`) becomes that command's
`--help`, taken from depthprior's own argparse parser when the site is built, so the option
lists on the command pages cannot drift from the CLI."""

from __future__ import annotations

import argparse
import os
import re

MARK = re.compile(r"<!-- options: ([a-z_ -]+?) -->")


def command_help(words: str) -> str:
    """The `--help` text of `depthprior WORDS...` at a fixed width."""
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: make the page reproducible
    from depthprior.cli import build_parser

    parser = build_parser()
    for word in words.split():
        parser = _subcommand(parser, word)
    return parser.format_help()


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    raise KeyError(f"depthprior has no command {name!r} under {parser.prog!r}")


def on_page_markdown(markdown: str, **_: object) -> str:
    def render(match: re.Match) -> str:
        text = command_help(match.group(1))
        return "```text\n" + text.rstrip() + "\n```"

    return MARK.sub(render, markdown)
