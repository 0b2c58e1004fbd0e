"""`magtape check -j N` in shard processes: the same report as `-j 1`, byte for byte.

-j N cuts the input into slices of whole documents and checks them in N
processes, this one and a pool (magtape.check.shards). What can go wrong is
all about identity with the serial run: order, counts, document numbers and
line numbers, Namespace objects in one shard that decide objects in another,
every error reported as -j 1 reports it; and about processes: Ctrl-C and a
dying shard process must leave none behind and hang nothing. Timing is
measured by `make bench ARGS=--check`, never asserted here.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import procs
from magtape.check import shards
from magtape.check.manifests import Input, parse_document_text
from magtape.cli import main
from magtape.engine import EngineError
from magtape.report import FORMATS
from waiting import eventually

POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p%d, namespace: a}\nspec:\n" \
      "  containers:\n  - {name: app, image: nginx, securityContext: {privileged: true}}\n"

# A NodePort outside the range its Namespace allows (MT2002); the Namespace
# comes last in the input, after the Service has been handed to the pool.
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: edge, namespace: ports}
spec:
  type: NodePort
  selector: {app: edge}
  ports:
  - {name: web, port: 80, targetPort: 8080, nodePort: 31000}
"""
NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ports
  annotations:
    k8s.t-mobile.com/nodeportRange: "%s"
"""


def repository(root: Path) -> Path:
    """Several files exercising every way a document can start, end or be skipped."""
    (root / "a.yaml").write_text(
        "# leading comment, no document\n---\n" + SERVICE + "---\n" + POD % 1
        + "--- # a separator with a comment\n" + POD % 2
        + "---\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        + "---\n---\n"  # an empty document: counted in the document numbers
        + "apiVersion: v1\nkind: List\nitems:\n"
        + "- {apiVersion: v1, kind: ConfigMap, metadata: {name: c1, namespace: b}}\n"
        + "- {apiVersion: v1, kind: Pod, metadata: {name: p3, namespace: b}, spec: "
        + "{containers: [{name: x, image: nginx}]}}\n")
    (root / "b.yaml").write_text(  # the first document without a "---"
        POD % 4 + "---\n" + POD % 5 + "--- {apiVersion: v1, kind: ConfigMap, "
        "metadata: {name: inline, namespace: a}}\n" + "...\n---\n" + POD % 6)
    (root / "c.yaml").write_text("%YAML 1.1\n---\n" + POD % 7 + "---\n" + POD % 8)
    (root / "d.json").write_text(json.dumps({"apiVersion": "v1", "kind": "ClusterRole",
                                             "metadata": {"name": "reader"}}))
    (root / "e.yaml").write_bytes((POD % 9 + "---\n" + POD % 10).replace("\n", "\r\n").encode())
    sub = root / "z"
    sub.mkdir()
    (sub / "ns.yaml").write_text("---\n" + POD % 11 + "---\n" + NAMESPACE % "30100-30200")
    return root


@pytest.fixture
def every_document_a_shard(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Shard even a small input; records how each sharded run ended."""
    monkeypatch.setattr(shards, "MIN_DOCUMENTS_PER_SHARD", 1)
    outcomes: list[str] = []
    real = shards.run_sharded

    def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            run = real(*args, **kwargs)
        except shards.Reparse:
            outcomes.append("reparse")
            raise
        outcomes.append(f"sharded {len(args[3])}")
        return run

    monkeypatch.setattr(shards, "run_sharded", spy)
    return outcomes


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, re.sub(r"generated [0-9: -]+ UTC", "generated <when>", out), err


@pytest.mark.parametrize("output", FORMATS)
def test_j2_and_j3_give_the_j1_report_on_a_multi_file_input(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, every_document_a_shard: list[str],
        output: str) -> None:
    root = repository(tmp_path)
    serial = check(capsys, "-o", output, "--deny-level", "MED", str(root))
    assert serial[0] == 1 and "skipped 1 non-Kubernetes documents" in serial[2]
    assert every_document_a_shard == []
    for jobs in ("2", "3"):
        assert check(capsys, "-o", output, "--deny-level", "MED", "-j", jobs, str(root)) == serial
    assert every_document_a_shard == ["sharded 2", "sharded 3"]
    assert multiprocessing.active_children() == []
    if output != "json":
        return
    doc = json.loads(serial[1])
    where = {o["name"]: (o["path"], o["document"], o["line"], o["item"]) for o in doc["objects"]}
    a, b, e = str(root / "a.yaml"), str(root / "b.yaml"), str(root / "e.yaml")
    assert where["edge"] == (a, 1, 3, None)
    assert where["p2"] == (a, 3, 19, None)
    assert where["p3"] == (a, 6, 34, 1)  # after the Kustomization and the empty document
    assert where["p4"] == (b, 1, 1, None)
    assert where["inline"] == (b, 3, 14, None)
    assert where["p6"] == (b, 4, 17, None)
    assert where["p10"] == (e, 2, 8, None)
    assert [o["name"] for o in doc["objects"]] == [
        "edge", "p1", "p2", "c1", "p3", "p4", "p5", "inline", "p6", "p7", "p8", "reader",
        "p9", "p10", "p11", "ports"]
    edge = doc["objects"][0]
    # The Namespace was read by another shard, yet decided the Service.
    assert edge["verdict"] == "DENIED" and "MT2002" in json.dumps(edge)
    assert doc["summary"]["nonKubernetesDocuments"] == 1


def test_the_last_namespace_of_a_name_decides_every_object(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        every_document_a_shard: list[str]) -> None:
    """As with -j 1, a Namespace read twice counts as read last, before and after it."""
    f = tmp_path / "all.yaml"
    f.write_text("---\n".join([NAMESPACE % "31000-31100", SERVICE, POD % 1,
                               NAMESPACE % "30100-30200", POD % 2]))
    serial = check(capsys, "-o", "json", "--deny-level", "MED", str(f))
    (edge,) = [o for o in json.loads(serial[1])["objects"] if o["name"] == "edge"]
    assert edge["verdict"] == "DENIED" and "MT2002" in json.dumps(edge)
    assert check(capsys, "-o", "json", "--deny-level", "MED", "-j", "2", str(f)) == serial
    assert every_document_a_shard == ["sharded 2"]


@pytest.mark.parametrize("documents", [[], ["x: 1\n", "[1, 2]\n"]], ids=["empty", "no objects"])
def test_an_input_without_objects_as_with_j1(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, documents: list[str],
                                              every_document_a_shard: list[str]) -> None:
    f = tmp_path / "nothing.yaml"
    f.write_text("---\n".join(documents))
    for flags in ((), ("--allow-empty", "-o", "json")):
        serial = check(capsys, *flags, str(f))
        assert check(capsys, *flags, "-j", "2", str(f)) == serial
    assert serial[0] == 0


def test_a_broken_document_in_a_later_shard_is_reported_as_with_j1(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        every_document_a_shard: list[str]) -> None:
    root = repository(tmp_path)
    (root / "z" / "ns.yaml").write_text(POD % 1 + "---\n" + POD % 2 + "---\napiVersion: v1\n"
                                        "kind: Pod\n  bad: indent\n")
    serial = check(capsys, str(root))
    assert serial[0] == 2 and f"{root / 'z' / 'ns.yaml'}:17: not valid YAML/JSON" in serial[2]
    assert check(capsys, "-j", "2", str(root)) == serial
    assert every_document_a_shard == ["reparse"]
    assert multiprocessing.active_children() == []


def test_an_unreadable_file_after_a_broken_one_names_the_broken_one(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        every_document_a_shard: list[str]) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {}\n")
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe not utf-8")
    serial = check(capsys, str(tmp_path))
    assert serial[0] == 2 and "a.yaml:1: Pod has no metadata.name" in serial[2]
    assert check(capsys, "-j", "2", str(tmp_path)) == serial

def broken_exceptions(tmp_path: Path) -> list[str]:
    bad = tmp_path / "exceptions.yaml"
    bad.write_text("not: an exception list\n")
    return ["--exceptions", str(bad)]


def broken_policy(tmp_path: Path) -> list[str]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.rego").write_text("package broken\ndeny contains x if {\n")
    return ["--policies", str(tmp_path / "policies")]


def broken_remediation(tmp_path: Path) -> list[str]:
    folder = tmp_path / "policies" / "privileged-pod"
    folder.mkdir(parents=True)
    source = Path(__file__).resolve().parents[1] / "policies" / "privileged-pod" / "policy.rego"
    (folder / "policy.rego").write_text(source.read_text())
    (folder / "remediation.yaml").write_text("id: not-a-check-id\nhint: x\n")
    return ["--policies", str(tmp_path / "policies")]


def missing_policies(tmp_path: Path) -> list[str]:
    return ["--policies", str(tmp_path / "no-such-directory")]


@pytest.mark.parametrize("flags, error", [
    (broken_exceptions, "exceptions.yaml"),  # read by each shard
    (broken_policy, "policies failed to load"),  # each shard's engine
    (broken_remediation, "'id' must be a check ID"),  # each shard's catalogue
    (missing_policies, "no-such-directory"),  # read before the shards start
], ids=lambda v: getattr(v, "__name__", ""))
def test_errors_are_reported_once_as_with_j1(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, every_document_a_shard: list[str],
        flags: Any, error: str) -> None:
    (tmp_path / "input").mkdir()
    args = [*flags(tmp_path), str(repository(tmp_path / "input"))]
    serial = check(capsys, *args)
    assert serial[0] == 2 and serial[1] == ""
    assert error in serial[2].splitlines()[-1] and serial[2].count(error) == 1
    assert check(capsys, "-j", "2", *args) == serial


def test_an_engine_error_travels_whole() -> None:
    """A shard's EngineError is raised in the command as it was raised there."""
    error = pickle.loads(pickle.dumps(EngineError("timeout", "no answer within 30s")))
    assert (error.reason, error.detail, str(error)) == (
        "timeout", "no answer within 30s", "timeout: no answer within 30s")


def test_progress_counts_every_shard(tmp_path: Path, every_document_a_shard: list[str]) -> None:
    from magtape.check import CheckOptions, run_check
    from magtape.settings import Settings

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    (tmp_path / "pods.yaml").write_text("---\n".join(POD % i for i in range(20)))
    err = Terminal()
    code = run_check(Settings(), CheckOptions(paths=(str(tmp_path),), jobs=2), io.StringIO(),
                     err)
    assert code == 1 and every_document_a_shard == ["sharded 2"]
    assert err.getvalue().endswith("\rmagtape check: 20/20 objects\r\x1b[K")


def test_a_large_input_through_the_command(tmp_path: Path) -> None:
    """As CI runs it (fork start, the default part size): -j 2 prints -j 1's report."""
    for name, first in (("one.yaml", 0), ("two.yaml", 70)):
        (tmp_path / name).write_text("---\n".join(POD % i for i in range(first, first + 70)))
    env = {**os.environ, "MAGTAPE_DENY_LEVEL": "LOW"}
    runs = [subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "json", "-j", j,
                            str(tmp_path)], capture_output=True, text=True, env=env,
                           timeout=300) for j in ("1", "2")]
    assert runs[0].returncode == 1 and runs[0].stderr == ""
    assert (runs[1].returncode, runs[1].stdout, runs[1].stderr) == \
        (runs[0].returncode, runs[0].stdout, runs[0].stderr)
    assert json.loads(runs[0].stdout)["summary"]["denied"] == 140


def cm(name: str) -> str:
    return f"{{apiVersion: v1, kind: ConfigMap, metadata: {{name: {name}}}}}"


CASES = {
    "preamble document": f"{cm('a')}\n---\n{cm('b')}\n--- # c\n{cm('c')}\n",
    "comment preamble": f"# c\n\n---\n{cm('a')}\n---\n---\nx: 1\n---\n{cm('b')}\n",
    "inline documents": f"--- {cm('a')}\n--- [1, 2]\n--- {cm('b')}\n",
    "crlf": f"{cm('a')}\r\n---\r\n\r\n{cm('b')}\r\n",
    "byte order mark": f"\ufeff---\n{cm('a')}\n---\n{cm('b')}\n",
    "document end": f"{cm('a')}\n...\n---\n{cm('b')}\n",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
@pytest.mark.usefixtures("every_document_a_shard")
def test_slices_hold_whole_documents_located_in_their_file(text: str) -> None:
    plan = shards.plan([("f", text)], 64)  # as many shards as there are documents
    slices = [s for shard in plan for s in shard]
    assert len(plan) > 1 and "".join(s.text for s in slices) == text
    whole = Input()
    parse_document_text(whole, "f", text)
    cut = shards.parse_slices(slices)
    assert cut.manifests == whole.manifests and cut.skipped == whole.skipped
    assert [m.line for m in whole.manifests][-1] > 1


@pytest.mark.parametrize("text", ["%YAML 1.1\n---\na: 1\n---\nb: 2\n", "a: 1\r---\rb: 2\r",
                                  "a: 1\n---\nb: 2\u2028"])
@pytest.mark.usefixtures("every_document_a_shard")
def test_streams_that_cannot_be_cut_stay_whole(text: str) -> None:
    assert shards.plan([("f", text), ("g", text)], 2) == [
        [shards.Slice("f", text, 0, 0, None)], [shards.Slice("g", text, 0, 0, None)]]


def test_shards_are_contiguous_and_balanced() -> None:
    sources = [("a", "---\n".join(POD % i for i in range(100))),
               ("b", "---\n".join(POD % i for i in range(100, 300)))]
    plan = shards.plan(sources, 3)
    # By bytes: "p100" is longer than "p99"; a file's documents in one shard, one slice.
    assert [[(s.name, s.index_offset, s.documents) for s in shard] for shard in plan] == [
        [("a", 0, 100), ("b", 0, 1)], [("b", 1, 99)], [("b", 100, 100)]]
    assert [s.line_offset for shard in plan for s in shard] == [0, 0, 6, 699]
    assert "".join(s.text for s in plan[0] if s.name == "b") + plan[1][0].text \
        + plan[2][0].text == sources[1][1]
    too_small = shards.plan(sources[:1], 2)
    assert too_small == [[shards.Slice("a", sources[0][1], 0, 0, None)]]


def test_spawned_shards_when_fork_is_unsafe(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            every_document_a_shard: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A process with other threads (an embedding application) spawns its shard processes."""
    methods: list[str | None] = []
    get_context = multiprocessing.get_context

    def recorded(method: str | None = None) -> Any:
        methods.append(method)
        return get_context(method)

    root = repository(tmp_path)
    serial = check(capsys, "-o", "json", str(root))
    monkeypatch.setattr(multiprocessing, "get_context", recorded)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert check(capsys, "-o", "json", "-j", "2", str(root)) == serial
    finally:
        stop.set()
        other.join()
    assert methods == ["spawn"] and every_document_a_shard == ["sharded 2"]


def _die(*_: object) -> None:
    os._exit(3)  # as if killed (out of memory) before answering


def test_a_shard_process_that_dies_is_an_error_not_a_hang(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, every_document_a_shard: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "_shard", _die)  # the forked pool runs it: it is module-level
    code, out, err = check(capsys, str(repository(tmp_path)), "-j", "2")
    assert (code, out) == (2, "")
    assert err.endswith("magtape check: the policy engine failed: crash: a check process "
                        "ended without an answer; run with -j 1 to see why\n")
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("when", ["starting", "evaluating"])
@pytest.mark.parametrize("whom", ["terminal", "command"])
def test_ctrl_c_leaves_no_process_behind(tmp_path: Path, whom: str, when: str) -> None:
    """Ctrl-C at a terminal (the whole process group) or to the command alone, as the
    shards start or evaluate: one line, exit 130, every shard process and engine worker gone."""
    f = tmp_path / "pods.yaml"
    f.write_text("---\n".join(POD % i for i in range(8000)))
    proc = subprocess.Popen([sys.executable, "-m", "magtape", "check", "-j", "2", str(f)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def started() -> tuple[dict[int, str], list[int]] | None:
            """The process tree and the shard processes in it, once both shards run
            their engine worker (and evaluate)."""
            tree = procs.descendants(proc.pid)
            assert proc.poll() is None, tree
            workers = [pid for pid, cmd in tree.items() if "magtape.engine.worker" in cmd]
            pool = [pid for pid in tree if pid not in workers]
            if len(workers) == 2 and (when == "starting" or
                                      sum(map(procs.cpu_seconds, pool)) > 0.2):
                return tree, pool
            return None

        tree, pool = eventually(started, 60, "both shards' engine workers")
        assert len(pool) == 1, tree  # shard 1; shard 0 is the command itself
        if whom == "terminal":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (130, "magtape: interrupted\n")
    with contextlib.suppress(AssertionError):  # the assertion below says which remain
        eventually(lambda: not any(map(procs.alive, tree)), 10, "every process to end")
    assert [cmd for pid, cmd in tree.items() if procs.alive(pid)] == []
