"""``magtape check -o html``: one self-contained, escaped page; summary, failures by check, passes.

(``magtape audit -o html`` is tested in test_audit_command.py with the fake
API server; tests/test_ui_browser.py renders the check report in Chromium.)
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from magtape.cli import main

REPO = Path(__file__).resolve().parent.parent


class Page(HTMLParser):
    """Tags, attributes and the text of each table row, enough to assert structure."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[tuple[dict[str, str | None], str]] = []
        self.headings: list[str] = []
        self._row: tuple[dict[str, str | None], list[str]] | None = None
        self._heading: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = (dict(attrs), [])
        elif tag in ("td", "th") and self._row is not None:
            self._row[1].append(" ")
        if tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append((self._row[0], " ".join("".join(self._row[1]).split())))
            self._row = None
        if tag in ("h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self._row[1].append(data)
        if self._heading is not None:
            self._heading.append(data)


def check_html(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", "-o", "html", *args])
    return code, capsys.readouterr().out


def test_testing_dir_shows_the_denied_deployment_and_its_five_failures(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check_html(capsys, str(REPO / "testing"))
    assert code == 1
    page = Page(out)
    # Summary first, then the denied objects, then failures by check, then passes.
    h2 = [h for h in page.headings if h in ("Summary", "Denied", "Failures by check", "Passed")]
    assert h2 == ["Summary", "Denied", "Failures by check", "Passed"]
    [denied] = [text for attrs, text in page.rows if attrs.get("class") == "denied"
                and attrs.get("data-object") == "Deployment test1/test-deploy02"]
    assert denied.startswith("Deployment test1/test-deploy02 5 MT2001"), denied
    results = [(attrs["data-check"], text) for attrs, text in page.rows
               if attrs.get("class") == "result"
               and attrs.get("data-object") == "Deployment test1/test-deploy02"]
    assert sorted(c for c, _ in results) == ["MT1001", "MT1002", "MT1003", "MT1004", "MT2001"]
    assert any(c == "MT2001" and "denied" in t and "Found privileged" in t for c, t in results)
    assert sum("warned" in t for _, t in results) == 4
    # Each check says how to fix it and links its documentation.
    assert any(h.startswith("MT2001 ") and "high" in h for h in page.headings)
    assert re.search(r'How to fix: [^<]+<a href="https://[^"]+">MT2001 documentation</a>', out)
    # Passes are collapsed.
    assert re.search(r"<details>\s*<summary>\d+ object\(s\) passed", out)


def test_the_file_is_self_contained_and_escapes_what_manifests_say(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("""apiVersion: v1
kind: Pod
metadata: {name: evil, namespace: test1}
spec:
  containers:
  - name: "<script>alert(1)</script>"
    image: busybox
    securityContext: {privileged: true}
""")
    code, out = check_html(capsys, str(tmp_path))
    assert code == 1
    assert "<script" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    page = Page(out)
    # No external assets: no scripts, stylesheets, images, frames or fonts loaded.
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in page.tags if "src" in a]
    assert "@import" not in out and "url(" not in out


def test_html_with_nothing_failing_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check_html(capsys, str(REPO / "testing" / "deployments" / "test-deploy01.yaml"))
    assert code == 0
    assert "Nothing failed." in out and "Nothing would be denied." in out
