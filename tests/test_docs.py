"""Every ``trainer`` command in the README and docs/ composes as written."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.helpers import ROOT, compose_config

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A line that starts the trainer: `trainer ...`, `python -m trainer ...` (after any launcher),
# or one of the launch scripts with its process count.
STARTS = re.compile(r"(?:^trainer|\s-m trainer|(?:^|\s)launch/\w+\.sh \d+|"
                    r"(?:^|\s)launch/slurm\.sbatch)(?=\s|$)")


def commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        inline = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
        for block in [*blocks, *inline]:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                match = STARTS.search(line)
                if match and not line.startswith(("trainer-", "#")):
                    found.append((page.name, line[match.end():].strip()))
    return found


# docs/extending.md's commands use the example user project's config folder.
PROJECT = ROOT / "examples" / "user_project"


def overrides(rest: str) -> list[str]:
    """The Hydra overrides of a command: a sweep's first value; Hydra's own keys left to Hydra,
    but for the search path (``--config-dir DIR`` given as one, relative to the example)."""
    out = []
    tokens = shlex.split(rest)
    for i, token in enumerate(tokens):
        if token == "--config-dir":
            out.append(f"hydra.searchpath=[file://{PROJECT / tokens[i + 1]}]")
            continue
        if token.startswith("hydra.searchpath="):
            out.append(token)
            continue
        if "=" not in token or token.startswith(("-", "hydra")):
            continue  # flags (--cfg job, -m) and Hydra's own settings
        key, _, value = token.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        out.append(f"{key}={value}")
    return out


def test_the_pages_have_commands_to_check():
    assert len(commands()) >= 50


@pytest.mark.parametrize("page,command", commands())
def test_every_documented_command_composes(page, command, monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))  # the example project, as if installed
    compose_config(*overrides(command))
