"""Remediation: every check has a hint and a link; `check` and `explain` show them.

The data lives in each policy folder's remediation.yaml; these tests keep it
complete and consistent with the policy it describes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from magtape.cli import main
from magtape.policy import Severity, Violation
from magtape.remediation import (
    DEFAULT_DOCS_URL,
    Catalogue,
    RemediationError,
    default_catalogue,
    remedy_line,
    with_remedies,
)

POLICIES = REPO / "policies"
FOLDERS = sorted(p.name for p in POLICIES.iterdir() if p.is_dir() and p.name != "lib")


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_policy_has_a_remedy_matching_its_errcode(folder: str) -> None:
    rego = (POLICIES / folder / "policy.rego").read_text(encoding="utf-8")
    errcode = re.search(r'"errcode":\s*"(MT\d{4})"', rego)
    assert errcode, f"policies/{folder}/policy.rego: no errcode found"
    remedy = default_catalogue().get(errcode.group(1))
    assert remedy is not None, f"policies/{folder} lacks remediation.yaml"
    assert remedy.policy == folder and remedy.hint and remedy.summary.startswith("Checks ")
    assert remedy.url == f"{DEFAULT_DOCS_URL}/{folder}/README.md"
    assert remedy.readme == str(POLICIES / folder / "README.md")


def v(errcode: str, policy: str = "x", msg: str = "m") -> Violation:
    return Violation(msg, policy, Severity.LOW, errcode)


def test_remedy_line_for_events_and_slack() -> None:
    """One line per distinct check, the hint then the link; nothing for unknown checks."""
    line = remedy_line([v("MT1001"), v("MT1001", msg="other container"), v("MT9999"),
                        v("MT1009")])
    assert line.splitlines() == [
        "MT1001: Add a livenessProbe (httpGet, tcpSocket or exec) that fails only when the "
        f"process can no longer make progress. ({DEFAULT_DOCS_URL}/liveness-probe/README.md)",
        "MT1009: Give every emptyDir a sizeLimit of at most 100M (for example 64Mi). "
        f"({DEFAULT_DOCS_URL}/emptydir/README.md)"]
    assert remedy_line([v("MT9999")]) == ""


@pytest.mark.parametrize("content, message", [
    ("id: nope\nhint: x\n", "'id' must be a check ID"),
    ("id: MT9901\n", "'hint' must be one line"),
    ("id: MT9901\nhint: |\n  two\n  lines\n", "'hint' must be one line"),
    ("id: MT9901\nhint: x\nurl: file:///etc/passwd\n", "'url' must be an http(s) URL"),
    ("- a list\n", "expected a mapping"),
])
def test_malformed_remediation_files_are_named(tmp_path: Path, content: str,
                                               message: str) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "remediation.yaml").write_text(content)
    with pytest.raises(RemediationError, match=re.escape(message)) as info:
        Catalogue.from_dirs([tmp_path])
    assert str(tmp_path / "p" / "remediation.yaml") in str(info.value)


CUSTOM = """package kubernetes.admission.no_latest
import rego.v1
import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {"name": "no-latest", "severity": "HIGH", "errcode": "MT9901",
                    "targets": workloads.kinds}

matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {
  workloads.is_workload
  some c in workloads.containers
  endswith(c.image, ":latest")
  info := messages.violation(policy_metadata, concat("", ["latest tag for ", c.name]))
}
"""


def test_custom_policies_bring_their_own_remedy(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    folder = tmp_path / "policies" / "no-latest"
    folder.mkdir(parents=True)
    (folder / "policy.rego").write_text(CUSTOM)
    (folder / "remediation.yaml").write_text(
        "id: MT9901\nhint: Pin the image by tag or digest.\n"
        "url: https://wiki.example.com/no-latest\n")
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
        "spec:\n  containers:\n  - {name: app, image: 'nginx:latest'}\n")
    code = main(["check", "--policies", str(tmp_path / "policies"), str(tmp_path / "pod.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "fix MT9901: Pin the image by tag or digest.  https://wiki.example.com/no-latest" \
        in out


def test_docs_url_flag_moves_every_link(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--docs-url", "https://docs.example.com/magtape/",
                 str(REPO / "testing" / "deployments" / "test-deploy02.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "  https://docs.example.com/magtape/privileged-pod/README.md" in out
    assert DEFAULT_DOCS_URL not in out


def test_explain_prints_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "mt1009"]) == 0
    out = capsys.readouterr().out
    readme = (POLICIES / "emptydir" / "README.md").read_text(encoding="utf-8")
    assert out.startswith(readme.rstrip("\n") + "\n")
    assert out.endswith(f"\nOnline: {DEFAULT_DOCS_URL}/emptydir/README.md\n")
    assert main(["explain", "host-path"]) == 0
    assert capsys.readouterr().out.startswith("# MT1010")


def test_explain_an_unknown_check_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "MT4242"]) == 2
    err = capsys.readouterr().err
    assert "no built-in check 'MT4242'; known: MT1001, MT1002" in err


def test_docs_url_from_the_environment_and_bad_values(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGTAPE_DOCS_URL", "https://mirror.example.com/p")
    assert main(["explain", "MT1009"]) == 0
    assert capsys.readouterr().out.endswith(
        "Online: https://mirror.example.com/p/emptydir/README.md\n")
    assert main(["explain", "--docs-url", "ftp://x", "MT1009"]) == 2
    assert "--docs-url='ftp://x' is invalid: accepted an http:// or https:// URL" \
        in capsys.readouterr().err
    monkeypatch.setenv("MAGTAPE_DOCS_URL", "nope")
    assert main(["explain", "MT1009"]) == 2
    assert "MAGTAPE_DOCS_URL='nope' is invalid" in capsys.readouterr().err


def test_with_remedies_keeps_the_message_first_and_intact() -> None:
    message = "[FAIL] MED - Size limit of emptyDir volume \"x\" is not set (MT1009)"
    text = with_remedies(message, [v("MT1009", msg=message)], "https://d.example.com")
    assert text == (f"{message} | How to fix: MT1009: Give every emptyDir a sizeLimit of at "
                    "most 100M (for example 64Mi). (https://d.example.com/emptydir/README.md)")
    assert with_remedies(message, [v("MT9999")]) == message
