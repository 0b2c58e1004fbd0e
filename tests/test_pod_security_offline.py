"""``magtape check --pod-security`` and ``magtape audit --pod-security``, with the real checks.

``check --pod-security LEVEL[:VERSION]`` is what the conformance tooling
calls (``-o json``, reading each violation's ``errcode``): it must judge every
object at that level whatever its namespace says, with the MT30xx checks
(policies/pss-*) evaluated by the real engine. ``audit`` lists, per namespace
in scope, its level, the PSA labels it carries (a candidate when it has only
those) and what fails per control.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from enforcementsupport import container, deployment, pod
from fakekube import FakeKube
from magtape.audit.command import AuditCommandOptions, run_audit
from magtape.cli import _apply_flags, _parser, main
from magtape.podsecurity import Level, PodSecurity, is_pss_check
from magtape.policy import DenyLevel
from magtape.settings import Settings
from test_audit_controller import namespace, register

# A Deployment that fails restricted but passes baseline: no securityContext.
PLAIN = deployment("web", container("app"))
# ...and one that passes restricted too.
HARDENED = deployment("hard", {**container("app"), "securityContext": {
    "allowPrivilegeEscalation": False, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}})


def check_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, objects: list[Any],
               *flags: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    code = main(["check", "-o", "json", *flags, str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out)


def pss_errcodes(report: dict[str, Any], name: str) -> set[str]:
    (obj,) = [o for o in report["objects"] if o["name"] == name]
    return {v["errcode"] for v in obj["violations"] if is_pss_check(v["errcode"])}


def test_without_a_level_no_pss_check_applies(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    _, report = check_json(capsys, tmp_path, [PLAIN])
    assert pss_errcodes(report, "web") == set()


@pytest.mark.parametrize("flag", ["restricted", "restricted:latest", "restricted:v1.25",
                                  "RESTRICTED:v1.0"])
def test_restricted_fails_a_plain_deployment_and_passes_a_hardened_one(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str) -> None:
    code, report = check_json(capsys, tmp_path, [PLAIN, HARDENED], "--pod-security", flag)
    assert code == 1
    failed = pss_errcodes(report, "web")
    assert failed and all(code.startswith("MT30") for code in failed)
    assert pss_errcodes(report, "hard") == set()
    for v in report["objects"][0]["violations"]:
        if is_pss_check(v["errcode"]):
            assert v["denies"] is True
            assert {"container", "image", "field", "level"} <= set(v["details"])


@pytest.mark.parametrize("flag", ["baseline", "privileged"])
def test_lower_levels_pass_the_plain_deployment(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, flag: str) -> None:
    _, report = check_json(capsys, tmp_path, [PLAIN], "--pod-security", flag)
    assert pss_errcodes(report, "web") == set()


def test_the_flag_wins_over_the_namespace_label(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "team-a", "labels": {"k8s.t-mobile.com/pod-security": "restricted"}}}
    _, labelled = check_json(capsys, tmp_path, [ns, PLAIN])
    assert pss_errcodes(labelled, "web")  # the label alone applies restricted
    _, flagged = check_json(capsys, tmp_path, [ns, PLAIN], "--pod-security", "privileged")
    assert pss_errcodes(flagged, "web") == set()


def test_jobs_carry_the_level_to_every_shard(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    many = [deployment(f"web{i}", container("app")) for i in range(40)]
    _, serial = check_json(capsys, tmp_path, many, "--pod-security", "restricted")
    _, sharded = check_json(capsys, tmp_path, many, "--pod-security", "restricted", "-j", "2")
    assert sharded == serial
    assert all(pss_errcodes(serial, f"web{i}") for i in range(40))


@pytest.mark.parametrize("raw", ["off", "strict", "restricted:1.25", "restricted:v2.0"])
def test_a_bad_level_is_a_usage_error_naming_what_is_accepted(
        capsys: pytest.CaptureFixture[str], raw: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--pod-security", raw, "-"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert repr(raw) in err and "privileged, baseline, restricted" in err and "v1.N" in err


def test_the_flag_sets_the_override_only() -> None:
    args = _parser().parse_args(["audit", "--pod-security", "baseline:v1.29"])
    settings = _apply_flags(Settings.from_env({"MAGTAPE_POD_SECURITY": "restricted"}), args)
    assert settings.pod_security.override == PodSecurity(Level.BASELINE, "v1.29")
    assert settings.pod_security.default == PodSecurity(Level.RESTRICTED, "latest")


# -------------------------------------------------------------------------- audit
@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    register(fake_kube)
    psa = namespace("psa-only")
    psa["metadata"]["labels"].update({"pod-security.kubernetes.io/enforce": "restricted",
                                      "pod-security.kubernetes.io/warn": "restricted"})
    mine = namespace("mine")
    mine["metadata"]["labels"]["k8s.t-mobile.com/pod-security"] = "baseline"
    fake_kube.seed(namespace("team-a"), psa, mine,
                   deployment("web", container("app")),
                   deployment("web", container("app"), namespace="psa-only"),
                   pod("agent", container("a", privileged=True), namespace="mine"),
                   deployment("hard", *HARDENED["spec"]["template"]["spec"]["containers"]))
    return fake_kube


def audit(kube: FakeKube, override: str = "", output: str = "json") -> tuple[int, str]:
    settings = Settings(deny_level=DenyLevel.LOW)
    if override:
        settings = settings.with_overrides(pod_security={"override": PodSecurity.parse(override)})
    out, err = io.StringIO(), io.StringIO()
    code = run_audit(settings, AuditCommandOptions(output=output), out, err,
                     api_client=kube.api_client())
    assert code in (0, 1), err.getvalue()
    return code, out.getvalue()


def views(out: str) -> dict[str, Any]:
    return {v["namespace"]: v for v in json.loads(out)["podSecurity"]["namespaces"]}


def test_audit_reports_psa_namespaces_as_candidates_and_never_enforces_them(
        kube: FakeKube) -> None:
    _, out = audit(kube)
    found = views(out)
    assert found["psa-only"]["candidate"] is True
    assert found["psa-only"]["psaLabels"] == {"enforce": "restricted", "warn": "restricted"}
    assert found["psa-only"]["controls"] == {}  # the PSA label is not MagTape's level
    assert found["mine"]["level"] == {"level": "baseline", "version": "latest"}
    assert found["mine"]["candidate"] is False
    assert found["mine"]["controls"]  # the privileged Pod fails baseline there
    assert found["team-a"]["controls"] == {}


def test_audit_what_would_break_at_restricted_per_namespace_and_control(
        kube: FakeKube) -> None:
    code, out = audit(kube, "restricted")
    assert code == 1
    doc = json.loads(out)
    assert doc["podSecurity"]["override"] == {"level": "restricted", "version": "latest"}
    found = views(out)
    for ns in ("team-a", "psa-only"):
        controls = found[ns]["controls"]
        assert controls and all(is_pss_check(c) for c in controls)
        # One object (web) fails each control there; the hardened one fails none.
        assert all(n == {"denied": 1, "warned": 0} for n in controls.values()), controls
    _, table = audit(kube, "restricted", output="table")
    assert "Pod Security (as if every namespace were restricted:latest):" in table
    assert "(candidate)" in table and "psa-only" in table


# ----------------------------------------------------- overlap with the original checks
OVERLAP_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p", "namespace": "team-a", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1",
         "controller": True}]},
    "spec": {"containers": [{**container("app"), "securityContext": {"privileged": True},
                             "ports": [{"containerPort": 80, "hostPort": 8080}]}],
             "volumes": [{"name": "h", "hostPath": {"path": "/var/log"}}]},
}
# Each field, the original check that reports it and the PSS controls that may instead.
OVERLAPS = {
    "privileged": ("MT2001", {"MT3003"}),
    "hostPort": ("MT1008", {"MT3006"}),
    "hostPath": ("MT1010", {"MT3005", "MT3013"}),
}


@pytest.mark.parametrize("flag", ["", "privileged", "baseline", "restricted"])
def test_an_overlapping_field_is_reported_once(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, flag: str) -> None:
    """privileged, hostPort, hostPath: the original check or the PSS control, never both."""
    _, report = check_json(capsys, tmp_path, [OVERLAP_POD],
                           *(("--pod-security", flag) if flag else ()))
    (obj,) = report["objects"]
    found = {v["errcode"] for v in obj["violations"]}
    for field, (original, controls) in OVERLAPS.items():
        pss = found & controls
        assert not (original in found and pss), (field, found)
        if flag in ("baseline", "restricted"):
            assert pss, (field, found)  # the PSS control reports it at these levels
        elif field != "hostPath":  # MT1010 only reports some paths; privileged keeps it
            assert original in found, (field, found)


def test_pss_checks_are_listed_as_applied_only_where_a_level_applies(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A hardened Deployment without a level has not "passed" restricted: the reports
    (JSON checks, JUnit cases) list the checks that applied, not all targeting the kind."""
    for flags, expected in (((), False), (("--pod-security", "restricted"), True)):
        _, report = check_json(capsys, tmp_path, [HARDENED], *flags)
        (obj,) = report["objects"]
        assert any(is_pss_check(c) for c in obj["checks"]) is expected, flags
        assert obj["verdict"] == "PASS"
    for jobs in ("1", "2"):  # the shards' reports carry the same list
        path = tmp_path / "many.yaml"
        path.write_text(yaml.safe_dump_all([HARDENED] * 30))
        assert main(["check", "-o", "json", "-j", jobs, str(path)]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert not any(is_pss_check(c) for o in doc["objects"] for c in o["checks"])
