"""`magtape check` on YAML values PyYAML can build but JSON cannot carry.

Values are read as kubectl reads them: an unquoted date stays its text and
integer and boolean mapping keys become their text. What neither JSON nor the
API server can carry (.inf/.nan, integers past float64, !!binary, !!set,
nesting past the webhook's limit, a self-referencing alias, an alias bomb) and a
metadata.name that is not a string are input errors (exit 2) naming the file,
the document's line and the path of the value, never a traceback. Documents
that are not Kubernetes objects are still skipped, whatever they hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magtape.cli import main
from magtape.review import MalformedReview, make_review, parse_review
from test_check_cli import POD, run

# Every refused document follows a valid one, so its line is not simply 1.
FIRST = POD % 0 + "---\n"
LINE = FIRST.count("\n") + 1


def pod(meta: str = "", spec: str = "") -> str:
    """A privileged Pod (denied: exit 1 when it is checked) with extra lines
    under metadata and spec, each indented by two spaces."""
    return ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: a\n" + meta
            + "spec:\n  containers:\n"
            + "  - {name: app, image: nginx, securityContext: {privileged: true}}\n" + spec)


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
            document: str) -> tuple[Path, str]:
    """``document`` after a valid one, checked: an input error (exit 2, nothing on
    stdout, no traceback); the file and stderr."""
    f = tmp_path / "bad.yaml"
    f.write_text(FIRST + document)
    code, out, err = run(capsys, str(f))
    assert code == 2 and out == "", err
    assert "Traceback" not in err
    return f, err


def nested(levels: int) -> str:
    """``spec.x`` holding lists nested so the innermost is at depth ``levels``
    (the document is depth 1, spec 2, x 3)."""
    brackets = levels - 2
    return pod(spec="  x: " + "[" * brackets + "]" * brackets + "\n")


def bomb(levels: int) -> str:
    """A billion-laughs document: ``9 ** levels`` strings once aliases are expanded."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "apiVersion: v1\nkind: Pod\nmetadata: {name: bomb}\n" + "\n".join(lines) + "\n"


INF = ".inf/.nan are not numbers JSON or the API server can carry"
PAST_FLOAT64 = "is beyond float64's range: JSON and the API server cannot carry it"
DEEP = ("nested deeper than 98 levels (100 in its AdmissionReview, the webhook's limit; "
        "a self-referencing alias?)")


@pytest.mark.parametrize("document, expected", [
    # Explicit tags build values JSON has no type for.
    (pod(meta="  annotations:\n    example.com/built: !!binary aGVsbG8=\n"),
     'metadata.annotations["example.com/built"]: !!binary data is not a JSON value'),
    (pod(spec="  tags: !!set {a, b}\n"), "spec.tags: a !!set is not a JSON value"),
    (pod(meta="  annotations: {built: !!timestamp 2024-01-01}\n"),
     "metadata.annotations.built: the !!timestamp 2024-01-01 is not a JSON value"),
    (pod(spec="  order: !!omap [{a: 1}]\n"),
     "spec.order[0]: an !!omap or !!pairs entry is not a JSON value"),
    # Keys other than strings, integers and booleans.
    (pod(meta="  labels: {null: z}\n"), "metadata.labels: the mapping key null is not a string"),
    (pod(meta="  labels: {1.5: z}\n"), "metadata.labels: the mapping key 1.5 is not a string"),
    # Numbers JSON cannot carry.
    (pod(spec="  priority: .inf\n"), f"spec.priority: .inf: {INF}"),
    (pod(spec="  priority: -.inf\n"), f"spec.priority: -.inf: {INF}"),
    (pod(spec="  priority: 1.0e+400\n"), f"spec.priority: .inf: {INF}"),
    (pod(spec="  overhead:\n  - {cpu: .nan}\n"), f"spec.overhead[0].cpu: .nan: {INF}"),
    (pod(spec=f"  priority: {2**1024 - 1}\n"),
     f"spec.priority: an integer of about 309 digits {PAST_FLOAT64}"),
    (pod(spec=f"  priority: -0x{'f' * 300}\n"),
     f"spec.priority: an integer of about 362 digits {PAST_FLOAT64}"),
    (pod(spec=f"  priority: {'9' * 5000}\n"),
     f"spec.priority: an integer of 5000 digits {PAST_FLOAT64}"),
    # Fields the API server reads as strings.
    (pod().replace("name: web", "name: 5"), "metadata.name must be a string, not 5"),
    (pod().replace("name: web", "name: [a]"), "metadata.name must be a string, not a list"),
    (pod().replace("name: web", "name: true"), "metadata.name must be a string, not true"),
    (pod().replace("name: web", "generateName: 7"),
     "metadata.generateName must be a string, not 7"),
    (pod().replace("namespace: a", "namespace: 1.5"),
     "metadata.namespace must be a string, not 1.5"),
    # A List without a list of items.
    ("apiVersion: v1\nkind: List\nitems:\n", "a List's items must be a list of objects, not null"),
    ("apiVersion: v1\nkind: List\nitems: {a: 1}\n",
     "a List's items must be a list of objects, not a mapping"),
    ("apiVersion: v1\nkind: List\nmetadata: {name: l}\nitems: {a: 1}\n",
     "a List's items must be a list of objects, not a mapping"),
    ("apiVersion: v1\nkind: List\n", "a List's items must be a list of objects; it has none"),
    ("apiVersion: v1\nkind: PodList\nitems: x\n",
     "a PodList's items must be a list of objects, not 'x'"),
])
def test_values_json_cannot_carry_are_input_errors(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, document: str,
                                                   expected: str) -> None:
    f, err = refused(capsys, tmp_path, document)
    assert f"{f}:{LINE}: {expected}" in err


@pytest.mark.parametrize("document, start, end", [
    (nested(99), "spec.x[0][0][0]", "[0][0][0]"),
    (pod(spec="  x: &s {self: *s}\n"), "spec.x.self.self", "self.self.self"),  # has no end
])
def test_nesting_past_the_limit_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           document: str, start: str, end: str) -> None:
    """Too deep for the engine, however it got so; the path's middle is left out."""
    f, err = refused(capsys, tmp_path, document)
    assert f"{f}:{LINE}: {start}" in err
    assert "..." in err and err.endswith(f"{end}: {DEEP}\n")


def test_check_and_the_webhook_draw_the_depth_limit_alike(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    """The deepest object `check` accepts is a review the webhook parses, and one
    level deeper the webhook refuses it too: CI passes nothing the cluster refuses."""
    f = tmp_path / "deep.yaml"
    f.write_text(nested(98))
    assert main(["review", str(f)]) == 0
    parse_review(capsys.readouterr().out.encode())
    f.write_text(nested(99))
    assert main(["review", str(f)]) == 2
    with pytest.raises(MalformedReview, match="nested deeper than 100 levels"):
        parse_review(make_review(yaml.safe_load(nested(99))).raw.encode())


def test_a_list_item_is_named_by_its_line_and_index(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    f = tmp_path / "list.yaml"
    f.write_text("apiVersion: v1\nkind: List\nitems:\n"
                 "- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n"
                 "- apiVersion: v1\n  kind: Pod\n  metadata: {name: b}\n"
                 "  spec:\n    containers:\n"
                 "    - {name: c, image: nginx, ports: [{containerPort: .nan}]}\n")
    code, out, err = run(capsys, str(f))
    assert code == 2 and out == "", err
    assert f"{f}:5 items[1]: spec.containers[0].ports[0].containerPort: .nan: {INF}" in err


@pytest.mark.parametrize("document", [
    pod(meta="  annotations:\n    built: 2024-01-01\n  creationTimestamp: 2024-01-01T00:00:00Z\n"),
    pod(meta="  annotations: {2024-01-01: x}\n"),  # a date key is its text too
    pod(meta="  annotations: {8080: x, true: y, 0x10: z}\n"),
    pod(spec="  args: [=]\n"),
    nested(98),  # as deep as the limit allows
    pod(spec=f"  priority: {2**1024 - 2**970 - 1}\n"),  # the largest finite as a float64
    pod(spec=f"  priority: -0x{'f' * 200}\n"),
    pod(spec="  x: &a [1, 2]\n  y: [*a, *a]\n"),  # an alias used as aliases are meant
])
def test_values_kubectl_reads_are_checked_normally(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, document: str) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text(FIRST + document)
    code, out, err = run(capsys, str(f))
    assert code == 1, err  # both privileged Pods are denied: checked, not refused
    assert out.count("DENIED Pod a/") == 2
    assert "2 objects checked" in out


def test_dates_and_keys_read_as_kubectl_reads_them(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text(pod(meta="  annotations:\n    built: 2024-01-01\n    8080: port\n"
                          "    true: flag\n    0x10: hex\n    2024-01-02: day\n"
                          "  creationTimestamp: 2024-01-01T00:00:00Z\n",
                     spec="  args: [=, 2024-01-01 10:00:00, 12:30, 1:30:00.5, 0x1F, 1_000]\n"))
    assert main(["review", str(f)]) == 0
    obj = json.loads(capsys.readouterr().out)["request"]["object"]
    assert obj["metadata"]["annotations"] == {"built": "2024-01-01", "8080": "port",
                                              "true": "flag", "16": "hex", "2024-01-02": "day"}
    assert obj["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"
    # YAML 1.1's base-60 numbers are text to kubectl; its other numbers are numbers.
    assert obj["spec"]["args"] == ["=", "2024-01-01 10:00:00", "12:30", "1:30:00.5", 31, 1000]


def check_in_a_process(f: Path) -> subprocess.CompletedProcess[str]:
    """`magtape check f`, a process of its own: a bug here must not take the tests down."""
    return subprocess.run([sys.executable, "-m", "magtape", "check", str(f)],
                          capture_output=True, text=True, timeout=60)


def test_documents_that_are_not_objects_are_skipped_whatever_they_hold(tmp_path: Path) -> None:
    f = tmp_path / "mixed.yaml"
    f.write_text("x: .inf\ny: !!binary aGk=\nz: &z [*z]\n" + "---\n" + bomb(9).split("\n", 3)[3]
                 + "---\n" + POD % 1)
    done = check_in_a_process(f)
    assert done.returncode == 1, done.stderr
    assert "DENIED Pod a/p1" in done.stdout
    assert "skipped 2 non-Kubernetes documents" in done.stderr


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(FIRST + bomb(9))  # 9**9 = 387,420,489 strings
    done = check_in_a_process(f)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert "Traceback" not in done.stderr
    assert (f"{f}:{LINE}: more than 1,000,000 values in the document once YAML aliases are "
            "expanded: it looks like an alias bomb") in done.stderr


def test_the_items_of_a_list_share_the_documents_budget(tmp_path: Path) -> None:
    """Each item below the limit, together past it: refused at the item that crosses it."""
    six = bomb(6).split("\n", 3)[3]  # 9**6 = 531,441 strings: under 1,000,000 alone
    f = tmp_path / "list.yaml"
    f.write_text("apiVersion: v1\nkind: List\n" + six + "items:\n"
                 "- {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {x: *a5}}\n"
                 "- {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {x: *a5}}\n")
    done = check_in_a_process(f)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert "Traceback" not in done.stderr
    assert f"{f}:11 items[1]: more than 1,000,000 values in the document" in done.stderr


def test_a_device_is_read_only_up_to_the_size_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/zero says its size is 0 and never ends: read up to 32 MiB, then refused."""
    code, _, err = run(capsys, "/dev/zero")
    assert code == 2 and "/dev/zero: larger than 32 MiB" in err


def test_stdin_that_is_not_utf8_is_an_input_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "magtape", "check", "-"], input=b"a: \xff\n",
                          capture_output=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert b"<stdin>: not valid UTF-8" in proc.stderr and b"Traceback" not in proc.stderr
