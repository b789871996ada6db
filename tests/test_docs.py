"""The documentation is a built artifact: the site builds in strict mode, its CLI reference holds
every flag of every command (walked from ptflow's own parsers, as a user's --help would show them)
with the default its declaration gives, no page keeps a flag table by hand, and the README stays
a front page whose links lead somewhere."""

from __future__ import annotations

import argparse
import dataclasses
import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

README_MAX_LINES = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` of this checkout: a broken link or anchor, a page missing from the
    navigation or a missing included file fails it."""
    for package in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(package)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml",
                           "--site-dir", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"docs built in {time.perf_counter() - started:.1f} s")
    return out


def commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command of `ptflow`, with its parser."""
    from ptflow.cli import build_parser

    found, todo = [], [((), build_parser())]
    while todo:
        path, parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(((*path, name), sub))
                    todo.append(((*path, name), sub))
    return found


def cli_sections(site: Path) -> dict[str, str]:
    """The CLI reference page's HTML, one piece per command (each starts at its <h2>)."""
    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    pieces = re.split(r'(?=<h2 id=")', page)
    return {re.match(r'<h2 id="([^"]+)"', piece).group(1): piece for piece in pieces[1:]}


def default_cells(section: str) -> dict[str, str]:
    """{'--lr': '0.001', ...}: each table row's flag and the text of its default cell."""
    cells = {}
    for row in re.findall(r"<tr>(.*?)</tr>", section, re.S):
        tds = [html.unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td>(.*?)</td>", row, re.S)]
        if len(tds) == 3:
            cells[tds[0].split()[0].rstrip(",").split(",")[-1]] = tds[1]
    return cells


def shown(value) -> str | None:
    """How a declared default reads in the reference; None where there is nothing to show."""
    if value is None or isinstance(value, bool) or value in ("", {}, []):
        return None
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def test_the_site_has_its_pages(site):
    for page in ("index.html", "reference/cli/index.html", "python-api/index.html", "guides/data/index.html"):
        assert (site / page).is_file(), page
    api = (site / "python-api" / "index.html").read_text(encoding="utf-8")
    for name in ("ptflow.api.train", "ptflow.api.load", "ptflow.api.Model", "ptflow.api.TrainResult"):
        assert f'id="{name}"' in api, name  # rendered from the docstrings


def test_every_flag_of_every_command_is_in_its_section_of_the_cli_reference(site):
    sections = cli_sections(site)
    listed = commands()
    assert {path[0] for path, _ in listed} >= {"train", "evaluate", "predict", "serve", "export", "sweep", "runs"}
    missing = []
    for path, parser in listed:
        section = sections.get("-".join(path))
        assert section is not None, f"no section for ptflow {' '.join(path)}"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", section):
                    missing.append(f"ptflow {' '.join(path)} {flag}")
    assert not missing, missing


def test_the_reference_shows_each_declared_default(site):
    """Reference: TrainConfig's field defaults (train) and the server Settings' (serve)."""
    from ptflow import TrainConfig
    from ptflow.serve.settings import Settings, flags

    sections = cli_sections(site)
    declared = {"train": {f.name: getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)},
                "serve": {f.name: f.default for f in flags()}}
    assert set(declared["serve"]) <= {f.name for f in dataclasses.fields(Settings)}
    for command, defaults in declared.items():
        cells = default_cells(sections[command])
        wrong = {name: (cells.get(f"--{name}"), shown(value)) for name, value in defaults.items()
                 if shown(value) is not None and cells.get(f"--{name}") != shown(value)}
        assert not wrong, wrong  # flag: (shown, declared)


def test_no_page_keeps_a_flag_table_by_hand():
    """A table headed `| flag | ...` is a copy of what the generated reference says."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    copied = [f"{page.relative_to(REPO)}: {line[:60]}" for page in pages
              for line in page.read_text(encoding="utf-8").splitlines() if re.match(r"\|\s*flags?\s*\|", line, re.I)]
    assert not copied, copied


def test_the_readme_is_a_front_page_whose_links_lead_somewhere():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    # .ci/run runs the fenced block after this marker, verbatim
    assert re.search(r"<!-- test-command -->\s*```sh\n.*pip install -e \"\.\[test\]\".*\n```", text)
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", text, re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith("#"):
            assert target[1:] in anchors, target
        elif "://" not in target:
            assert (REPO / target.split("#")[0]).exists(), target
