"""`magtape check` as a user runs it: inputs, verdicts, exit codes, stdin, review, explain.

Output formats are tested in test_check_reports.py; what a real repository
holds (kustomizations, charts, tool configs, ignore globs) in
test_check_inputs.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from magtape.cli import main

DEPLOY = REPO / "testing" / "deployments"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("paths, flags, code", [
    ([DEPLOY / "test-deploy01.yaml"], ["--deny-level", "LOW"], 0),
    ([DEPLOY / "test-deploy02.yaml"], ["--deny-level", "LOW"], 1),
    ([DEPLOY / "test-deploy02.yaml"], ["--deny-level", "OFF"], 0),
    ([DEPLOY / "test-deploy03.yaml"], ["--deny-level", "LOW"], 0),
    ([DEPLOY / "test-deploy03.yaml"], ["--deny-level", "HIGH"], 1),
    ([DEPLOY], ["--deny-level", "LOW"], 1),
    ([DEPLOY / "test-deploy01.yaml", DEPLOY / "test-deploy03.yaml"], ["--deny-level", "LOW"], 0),
    # --fail-on counts the other way: the lowest severity that fails.
    ([DEPLOY / "test-deploy03.yaml"], ["--fail-on", "HIGH"], 0),  # LOW and MED failures only
    ([DEPLOY / "test-deploy03.yaml"], ["--fail-on", "MED"], 1),  # MT1009 is MED
    ([DEPLOY / "test-deploy03.yaml"], ["--fail-on", "low"], 1),
    ([DEPLOY / "test-deploy02.yaml"], ["--fail-on", "HIGH"], 1),  # MT2001 is HIGH
])
def test_exit_codes(capsys: pytest.CaptureFixture[str], paths: list[Path], flags: list[str],
                    code: int) -> None:
    got, out, err = run(capsys, *flags, *map(str, paths))
    assert got == code, out + err
    assert "objects checked at deny level " in out


def test_fail_on_and_deny_level_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--fail-on", "HIGH", "--deny-level", "LOW", str(DEPLOY)])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_says_which_way_the_scale_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "LOW denies only HIGH-severity failures" in help_text
    assert "exit 1 when a failure of at least this severity is found" in help_text


def test_text_report_groups_by_object_with_how_to_fix(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(DEPLOY / "test-deploy02.yaml"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("DENIED Deployment test1/test-deploy02")
    assert lines[0].endswith("(" + str(DEPLOY / "test-deploy02.yaml") + ":2)")
    # The message is exactly the webhook's; the fix hint and link follow it.
    assert lines[1] == ('         deny: [FAIL] HIGH - Found privileged Security Context for '
                        'container "test-deploy02" (MT2001)')
    assert sum("warn: [FAIL] LOW" in ln for ln in lines) == 4
    fix = next(ln for ln in lines if "fix MT2001:" in ln)
    assert "privileged" in fix and fix.endswith("/privileged-pod/README.md")


POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p%d, namespace: a}\nspec:\n" \
      "  containers:\n  - {name: app, image: nginx, securityContext: {privileged: true}}\n"


def test_skip_verdict_and_cluster_scoped_objects(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    f = tmp_path / "mixed.yaml"
    f.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
                 "metadata: {name: reader}\nrules: []\n---\n"
                 "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n---\n"
                 "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: x}\n"
                 "---\n" + POD % 1)
    code, out, _ = run(capsys, str(f))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"SKIP   ClusterRole reader  ({f}:1)"  # no namespace: cluster-scoped
    assert lines[1] == f"SKIP   ConfigMap default/cfg  ({f}:6)"
    assert lines[2] == f"SKIP   Widget x/w  ({f}:10)"
    assert lines[3].startswith("DENIED Pod a/p1")
    assert "4 objects checked at deny level LOW: 1 denied, 0 allowed with warnings, 0 passed, " \
           "3 skipped" in out


def test_cluster_scoped_objects_are_reviewed_without_namespace(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "ns.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n")
    assert main(["review", "-n", "other", str(f)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["request"]["namespace"] == ""


def test_stdin_and_lists_through_a_pipe() -> None:
    """What `kubectl kustomize dir | magtape check -` does."""
    items = [yaml.safe_load(p.read_text()) for p in sorted(DEPLOY.glob("test-deploy0*.yaml"))]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    out = subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "json", "-"],
                         input=doc, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MAGTAPE_DENY_LEVEL": "LOW"})
    assert out.returncode == 1, out.stderr
    objects = json.loads(out.stdout)["objects"]
    assert [(o["path"], o["item"]) for o in objects] == [("<stdin>", i) for i in range(3)]


NODEPORT = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ports
  annotations:
    k8s.t-mobile.com/nodeportRange: "30100-30200"
---
apiVersion: v1
kind: Service
metadata:
  name: edge
  namespace: ports
spec:
  type: NodePort
  selector: {app: edge}
  ports:
  - {name: web, port: 80, targetPort: 8080, nodePort: %d}
"""


@pytest.mark.parametrize("node_port, code", [(30150, 0), (31000, 1)])
def test_namespace_objects_become_cluster_data(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, node_port: int, code: int) -> None:
    f = tmp_path / "svc.yaml"
    f.write_text(NODEPORT % node_port)
    got, out, err = run(capsys, "--deny-level", "MED", str(f))
    assert got == code, out + err
    assert ("MT2002" in out) is bool(code)


def test_namespace_flag_and_data_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    svc = NODEPORT.split("---\n")[1].replace("  namespace: ports\n", "") % 31000
    (tmp_path / "svc.yaml").write_text(svc)
    (tmp_path / "ns.yaml").write_text(
        "kubernetes:\n  namespaces:\n    ports:\n      metadata:\n        annotations:\n"
        "          k8s.t-mobile.com/nodeportRange: '30100-30200'\n")
    got, out, _ = run(capsys, "--deny-level", "MED", "-n", "ports", "--data",
                      str(tmp_path / "ns.yaml"), str(tmp_path / "svc.yaml"))
    assert got == 1 and "Service ports/edge" in out


@pytest.mark.parametrize("content, message", [
    ("apiVersion: v1\nkind: Pod\n  bad: indent\nx: 1\n", ":3: not valid YAML/JSON"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", ":1: Pod has no metadata.name"),
    ("# a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {kind: Pod, metadata: {name: a}}\n"
     "- 42\n", ":7 items[1]: expected a Kubernetes object"),
])
def test_input_errors_exit_2_naming_file_and_line(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, content: str,
                                                  message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    code, out, err = run(capsys, str(f))
    assert code == 2 and out == ""
    assert f"{f}{message}" in err


def test_missing_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "/no/such/manifest.yaml")
    assert code == 2 and "/no/such/manifest.yaml: no such file" in err


@pytest.mark.parametrize("args, message", [
    (["--deny-level", "SOMETIMES"], "accepted OFF, LOW, MED, HIGH"),
    (["--fail-on", "OFF"], "accepted LOW, MED, HIGH"),
    (["-j", "0"], "expected a whole number >= 1"),
    (["-o", "tap"], "invalid choice: 'tap'"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                             message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", *args, "x.yaml"])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_stdin_is_an_error_unless_allowed(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run(capsys, "--deny-level", "HIGH", "-")
    assert code == 2 and out == ""
    assert "no Kubernetes object was read from -; pass --allow-empty" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, _ = run(capsys, "--allow-empty", "-")
    assert code == 0 and "0 objects checked" in out


def test_only_non_kubernetes_documents_is_an_error(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    (tmp_path / "kind.yaml").write_text("apiVersion: kind.x-k8s.io/v1alpha4\nkind: Cluster\n")
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2
    assert "skipped 1 non-Kubernetes documents (1 Cluster)" in err
    assert "no Kubernetes object was read" in err


def test_an_empty_policy_directory_is_an_error_unless_allowed(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "pod.yaml").write_text(POD % 1)
    code, out, err = run(capsys, "--policies", str(tmp_path / "policies"),
                         str(tmp_path / "pod.yaml"))
    assert code == 2 and out == ""
    assert f"no policy was loaded from {tmp_path / 'policies'}" in err
    code, out, _ = run(capsys, "--allow-empty", "--policies", str(tmp_path / "policies"),
                       str(tmp_path / "pod.yaml"))
    assert code == 0 and out.startswith("SKIP   Pod a/p1")


def test_parallel_jobs_give_the_same_report_in_input_order(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    f = tmp_path / "pods.yaml"
    f.write_text("---\n".join(POD % i for i in range(12)))
    serial = run(capsys, "-o", "json", str(f))
    parallel = run(capsys, "-o", "json", "-j", "3", str(f))
    assert serial == parallel
    assert serial[0] == 1
    assert [o["name"] for o in json.loads(serial[1])["objects"]] == [f"p{i}" for i in range(12)]


@contextlib.contextmanager
def on_a_terminal(args: list[str], stream: str, **popen: Any
                  ) -> Iterator[tuple[subprocess.Popen[Any], int]]:
    """``magtape ARGS`` with a pseudo-terminal as its ``stream`` ("stdin" or
    "stderr"): the process and the terminal's other end, both ended afterwards."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "magtape", *args], **{stream: follower},
                            **popen)
    os.close(follower)
    try:
        yield proc, leader
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_argument_on_a_terminal_says_it_reads_stdin() -> None:
    """A pseudo-terminal as stdin: the note appears at once; EOF (Ctrl-D) then ends input."""
    with on_a_terminal(["check"], "stdin", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True) as (proc, leader):
        first = proc.stderr.readline() if proc.stderr else ""
        assert "reading manifests from stdin (end with Ctrl-D)" in first
        os.write(leader, b"\x04")  # Ctrl-D on an empty line: end of input
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no Kubernetes object was read" in err


def test_ctrl_c_prints_no_traceback() -> None:
    """SIGINT while waiting on stdin: one line and exit 130, no traceback."""
    proc = subprocess.Popen([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from magtape.cli import main\n"
        "class In:\n"
        "    def isatty(self): return False\n"
        "    def read(self, size=-1):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        return ''\n"
        "sys.stdin = In()\n"
        "sys.exit(main(['check', '-']))\n")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert err == "magtape: interrupted\n" and out == ""


def test_review_prints_what_the_api_server_would_send(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "-n", "other", str(DEPLOY / "test-deploy02.yaml")]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    assert doc["request"]["kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert doc["request"]["namespace"] == "test1"  # the manifest's own namespace wins
    assert doc["request"]["operation"] == "CREATE" and doc["request"]["dryRun"] is False


CUSTOM = """package kubernetes.admission.no_latest
import rego.v1
import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {"name": "no-latest", "severity": "MED", "errcode": "MT9901",
                    "targets": workloads.kinds}

matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {
  matches
  some c in workloads.containers
  endswith(c.image, ":latest")
  info := messages.violation(policy_metadata, concat("", ["latest tag for ", c.name]))
}
"""


def test_custom_policies_get_the_builtin_library(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    """`--policies` replaces the built-in checks but keeps the library they import."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.rego").write_text(CUSTOM)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
                        "spec:\n  containers:\n  - {name: app, image: 'nginx:latest'}\n")
    code, out, err = run(capsys, "--deny-level", "MED", "--policies",
                         str(tmp_path / "policies"), str(manifest))
    assert code == 1, err
    assert "[FAIL] MED - latest tag for app (MT9901)" in out
    assert "MT1001" not in out  # the built-in checks are not loaded


def test_version_is_fast_and_imports_no_heavy_dependency() -> None:
    """`magtape --version` loads neither the Kubernetes client, cryptography nor the engine."""
    probe = ("import sys\nfrom magtape.cli import main\n"
             "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('kubernetes', 'cryptography', 'regopy', 'regorus', 'flask',"
             " 'magtape.engine') if m in sys.modules]\n"
             "print('heavy:', heavy)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "heavy: []"
    assert out.stdout.startswith("magtape ")


def test_an_engine_worker_does_not_read_the_version() -> None:
    """Every worker imports the package; the version (importlib.metadata, ~40 ms) is
    read only where it is shown."""
    probe = ("import sys\nimport magtape.engine.worker\n"
             "print('importlib.metadata' in sys.modules)\n"
             "import magtape\nprint(magtape.__version__ != '')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_init_flags_are_still_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["init", "--help"])
    assert info.value.code == 0
    assert "--write-dir" in capsys.readouterr().out


def test_progress_line_on_a_terminal(tmp_path: Path) -> None:
    """stderr a terminal: a `done/total` line rewritten in place, erased at the end."""
    f = tmp_path / "pods.yaml"
    f.write_text("---\n".join(POD % i for i in range(12)))
    seen = b""
    with on_a_terminal(["check", "-j", "2", str(f)], "stderr", stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE) as (proc, leader):
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"\rmagtape check: 12/12 objects\r\x1b[K" in seen
    assert b"magtape check" not in out  # the report itself is untouched
