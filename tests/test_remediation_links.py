"""Every documentation link MagTape prints resolves to a file of this repository.

The links point at the project's repository at the running version's release
tag (magtape.project); a link is mapped back to a repository path and that
file must exist here, so a renamed README or a wrong base fails the suite
rather than a user's click. The version the links name is the package's.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import REPO
from magtape import project
from magtape.cli import main
from magtape.remediation import DEFAULT_DOCS_URL, default_catalogue

PREFIX = f"{project.REPOSITORY}/blob/{project.TAG}/"
URL_RE = re.compile(r"https?://[^\s\"')\]>]+")


def repo_path(url: str) -> Path:
    """The file of this repository that ``url`` shows at the release tag."""
    assert url.startswith(PREFIX), f"{url} is not a file of {project.REPOSITORY} at {project.TAG}"
    return REPO / url[len(PREFIX):].split("#", 1)[0]


def test_the_version_is_one_version() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project.VERSION == pyproject["project"]["version"] == version("magtape")
    assert f"{PREFIX}policies" == DEFAULT_DOCS_URL


def test_every_check_links_a_file_that_exists() -> None:
    remedies = list(default_catalogue())
    assert len(remedies) >= 12
    for r in remedies:
        target = repo_path(r.url)
        assert target.is_file(), f"{r.id}: {r.url} -> {target.relative_to(REPO)} does not exist"
        assert target == Path(r.readme).resolve()


@pytest.mark.parametrize("fmt", ["json", "sarif", "text"])
def test_every_link_in_a_report_resolves(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """The denied samples of every policy fail every check: all their links, as printed."""
    samples = sorted(str(p) for p in (REPO / "policies").glob("*/samples/denied-*.yaml"))
    main(["check", "--deny-level", "HIGH", "-o", fmt, *samples])
    out = capsys.readouterr().out
    links = {u.rstrip(".,") for u in URL_RE.findall(out)}
    ours = {u for u in links if u.startswith(project.REPOSITORY)}
    others = links - ours
    # Schemas a format names are not links to us; nothing else may leave the repository.
    assert all("sarif" in u or "schemastore" in u or "oasis" in u for u in others), others
    assert len({u for u in ours if "/policies/" in u}) >= 12, ours
    for url in ours:
        if url.rstrip("/") == project.REPOSITORY:
            continue  # SARIF's tool URI: the repository itself
        assert repo_path(url).is_file(), f"{url} does not resolve to a file here"


def test_the_docs_url_stays_configurable(capsys: pytest.CaptureFixture[str]) -> None:
    sample = next((REPO / "policies").glob("*/samples/denied-*.yaml"))
    main(["check", "-o", "json", "--docs-url", "https://docs.example.com/mt", str(sample)])
    doc = json.loads(capsys.readouterr().out)
    urls = [v["url"] for o in doc["objects"] for v in o.get("violations", [])]
    assert urls and all(u.startswith("https://docs.example.com/mt/") for u in urls), urls


def test_the_repository_is_named_the_same_wherever_it_cannot_be_imported() -> None:
    """The Dockerfile, the examples and the docs cannot import magtape.project."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f'org.opencontainers.image.source="{project.REPOSITORY}"' in dockerfile
    for doc in ("docs/install.md", "docs/ci.md", "SECURITY.md", "CHANGELOG.md"):
        named = set(re.findall(r"https://github\.com/[\w.-]+/magtape\b", (REPO / doc).read_text()))
        assert named == {project.REPOSITORY}, doc
