"""The documentation's tables say what the code defines (issue 14): the settings
table of ``docs/api.md`` and ``.env.example`` list exactly ``config.VARIABLES``, the
metrics table of ``docs/operations.md`` exactly ``metrics.METRICS_HELP`` (types and
labels too), and the README and ``docs/`` link only to files that exist.
"""

from __future__ import annotations

import re
from pathlib import Path

from ngai_chat.config import VARIABLES
from ngai_chat.metrics import METRICS_HELP

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: settings the docs already describe (SPEC §2) that other branches of this round
#: add to ``config.VARIABLES``; once there, they are held like every other
#: gunicorn's own variables in ``.env.example``, read by ``ngai_chat/gunicorn_conf.py``
GUNICORN_VARIABLES = {
    "WEB_CONCURRENCY",
    "GUNICORN_WORKER_CONNECTIONS",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "LOG_LEVEL",
}
#: documents that other branches of this round write, linked already
PENDING_DOCS = {
    "docs/scaling.md",
    "docs/redis-cluster.md",
    "docs/content.md",
    "docs/ai-sdk.md",
    "docs/openai.md",
    "docs/chat-page.md",
}

_NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def section(path: Path, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of that level."""
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in ``text``, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= {"|", "-", " "}:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(cells)
    return [row for row in rows if row[0] not in {"name", "metric"}]


def test_the_settings_table_lists_every_setting() -> None:
    documented: set[str] = set()
    for row in table_rows(section(DOCS / "api.md", "Settings")):
        documented.update(_NAME.findall(row[0]))
    assert set(VARIABLES) <= documented, f"undocumented: {sorted(set(VARIABLES) - documented)}"
    unknown = documented - set(VARIABLES)
    assert not unknown, f"documented but not settings: {sorted(unknown)}"


def test_env_example_lists_every_setting() -> None:
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(VARIABLES) <= named, f"missing from .env.example: {sorted(set(VARIABLES) - named)}"
    unknown = named - set(VARIABLES) - GUNICORN_VARIABLES
    assert not unknown, f"in .env.example but not settings: {sorted(unknown)}"
    gunicorn_conf = (ROOT / "ngai_chat" / "gunicorn_conf.py").read_text()
    for name in GUNICORN_VARIABLES:
        assert f'"{name}"' in gunicorn_conf, f"{name} is read by no one"


def test_the_metrics_table_lists_every_metric_with_its_type_and_labels() -> None:
    documented = {}
    for row in table_rows(section(DOCS / "operations.md", "Metrics")):
        (name,) = re.findall(r"`([a-z_]+)`", row[0])
        documented[name] = (row[1], tuple(re.findall(r"`([a-z_]+)`", row[2])))
    defined = {name: (kind, labels) for name, (kind, labels, _) in METRICS_HELP.items()}
    assert documented == defined


def test_links_lead_to_files_that_exist() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s):, mailto:
            path = (page.parent / target).resolve()
            relative = path.relative_to(ROOT).as_posix()
            if not path.exists() and relative not in PENDING_DOCS:
                broken.append(f"{page.relative_to(ROOT)} → {target}")
    assert not broken


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert readme.index("make run") < readme.index("## ")  # the two commands come first
    assert "SPEC.md" not in readme  # users never have it; docs/api.md is the contract
