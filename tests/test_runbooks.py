"""The runbooks' commands name things that exist in the shipped manifests.

Every fenced ``sh`` block in docs/runbooks/*.md (and docs/break-glass.md,
which the runbooks send people to) is split into commands; each ``kubectl``
command is parsed and checked against the rendered production overlay (plus
the components a runbook mentions and the objects MagTape creates at run
time): the namespace, each ``kind/name`` and ``kind name`` it names, its
label selector (some object must carry those labels), its container name,
and every ``MAGTAPE_*`` variable (documented in docs/configuration.md). A
placeholder in angle brackets (``<pod>``) is accepted anywhere. Each runbook
must also have the four sections an on-call engineer looks for.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from kustomizing import render

RUNBOOKS = sorted((REPO / "docs" / "runbooks").glob("MagTape*.md"))
DOCS = [*RUNBOOKS, REPO / "docs" / "break-glass.md"]
SECTIONS = ("## What it means", "## Confirm", "## Mitigate now", "## Fix the cause")
# Production as shipped, with the monitoring components, and with cert-manager
# (which replaces the init container, so it is rendered on its own).
RENDERS = (("servicemonitor", "prometheusrule"), ("cert-manager",))

# kubectl's names for the kinds the runbooks touch.
KINDS = {
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "svc": "Service", "service": "Service", "services": "Service",
    "endpoints": "Service",  # a Service's Endpoints share its name
    "secret": "Secret", "secrets": "Secret",
    "cm": "ConfigMap", "configmap": "ConfigMap", "configmaps": "ConfigMap",
    "lease": "Lease", "leases": "Lease",
    "pod": "Pod", "pods": "Pod", "po": "Pod",
    "hpa": "HorizontalPodAutoscaler", "pdb": "PodDisruptionBudget",
    "validatingwebhookconfiguration": "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
    "servicemonitor": "ServiceMonitor", "prometheusrule": "PrometheusRule",
    "certificate": "Certificate", "certificates": "Certificate",
    "namespace": "Namespace", "ns": "Namespace",
    "magtapeexception": "MagTapeException", "magtapeexceptions": "MagTapeException",
    "policyreports": "PolicyReport", "events": "Event",
}
# Made at run time, not by the manifests.
RUNTIME = [
    {"kind": "Lease", "metadata": {"name": "magtape-audit", "namespace": "magtape-system"}},
    {"kind": "Secret", "metadata": {"name": "magtape-tls", "namespace": "magtape-system"}},
    {"kind": "Secret", "metadata": {"name": "magtape-slack-default",
                                    "namespace": "magtape-system"}},
    {"kind": "PolicyReport", "metadata": {"name": "magtape-audit", "labels": {
        "app.kubernetes.io/managed-by": "magtape"}}},
]
# Verbs whose next positional arguments are a kind and (optionally) names.
RESOURCE_VERBS = {"get", "describe", "delete", "edit", "patch", "label", "annotate", "scale",
                  "top", "logs", "port-forward", "set", "rollout"}
FLAGS_WITH_VALUES = {"-n", "--namespace", "-l", "--selector", "-c", "--container", "-o",
                     "--output", "-p", "--patch", "--type", "--tail", "--replicas",
                     "--sort-by", "--raw", "-f", "-k", "--sync-policy"}




@functools.cache
def objects() -> tuple[dict[str, Any], ...]:
    """Production with the RENDERS components, plus the run-time objects."""
    rendered = []
    for components in RENDERS:
        with tempfile.TemporaryDirectory(prefix="magtape-runbooks-") as tmp:
            rel = os.path.relpath(REPO, tmp)
            (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [f"{rel}/overlays/production"],
                "components": [f"{rel}/components/{c}" for c in components]}))
            rendered += render(Path(tmp))
    return (*rendered, *RUNTIME)


def pod_templates() -> list[dict[str, Any]]:
    return [o["spec"]["template"] for o in objects() if o["kind"] == "Deployment"]


def exists(kind: str, name: str) -> bool:
    if kind == "Pod":  # pods are named by their controller: only placeholders
        return False
    return any(o["kind"] == kind and o["metadata"]["name"] == name for o in objects())


def labelled(selector: str) -> bool:
    wanted = dict(pair.split("=", 1) for pair in selector.split(","))
    carriers = [o["metadata"] for o in objects()] + [t["metadata"] for t in pod_templates()]
    return any(wanted.items() <= m.get("labels", {}).items() for m in carriers)


def containers() -> set[str]:
    return {c["name"] for t in pod_templates()
            for c in [*t["spec"].get("initContainers", []), *t["spec"]["containers"]]}


def placeholder(word: str) -> bool:
    return word.startswith("<") and word.endswith(">")


@dataclass(frozen=True)
class Command:
    doc: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc}: {self.text}"


def commands(path: Path) -> list[Command]:
    """The commands of a document's ``sh`` blocks, continuation lines joined,
    split at pipes and ``&``/``;``; comments dropped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            for part in re.split(r"\s(?:\||&&|;|&)(?:\s|$)|\s&$", line):
                if part.strip():
                    out.append(Command(path.name, part.strip()))
    return out


KUBECTL = [c for d in DOCS for c in commands(d) if c.text.startswith("kubectl ")]


def test_the_runbooks_have_kubectl_commands() -> None:
    assert len(RUNBOOKS) >= 14 and len(KUBECTL) > 60
    assert all(any(c.doc == d.name for c in KUBECTL) for d in RUNBOOKS)


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_every_runbook_has_the_four_sections(path: Path) -> None:
    text = path.read_text()
    assert text.startswith(f"# {path.stem}\n"), path
    positions = [text.find(s) for s in SECTIONS]
    assert all(p > 0 for p in positions) and positions == sorted(positions), path


def problems(command: Command) -> list[str]:
    """What in one kubectl command names something the manifests do not have."""
    words = shlex.split(re.sub(r"<[^>]*>", "<x>", command.text))[1:]
    found: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        flag, _, inline = word.partition("=")
        value = inline if inline else (words[i + 1] if i + 1 < len(words) else "")
        if flag in FLAGS_WITH_VALUES:
            i += 1 if inline else 2
            if placeholder(value):
                continue
            if flag in ("-n", "--namespace") and not exists("Namespace", value):
                found.append(f"namespace {value!r} is not in the manifests")
            if flag in ("-l", "--selector") and not labelled(value):
                found.append(f"no object carries the labels {value!r}")
            if flag in ("-f", "-k") and value != "-" and not (REPO / value).exists():
                found.append(f"{value} is not in the repository")
            if flag in ("-c", "--container") and value not in containers():
                found.append(f"container {value!r} is not in the Deployment")
            continue
        if not word.startswith("-"):
            positional.append(word)
        i += 1
    for variable in re.findall(r"\bMAGTAPE_[A-Z_]+", command.text):
        if f"`{variable}`" not in CONFIGURATION:
            found.append(f"{variable} is not documented in docs/configuration.md")
    found += resource_problems(positional)
    return found


def resource_problems(positional: list[str]) -> list[str]:
    """``verb kind/name ...`` or ``verb kind name ...`` (and ``rollout``/``set``'s sub-verb)."""
    if not positional or positional[0] not in RESOURCE_VERBS:
        return []
    args = positional[1:]
    if positional[0] in ("rollout", "set") and args:
        args = args[1:]
    found = []
    refs = [a for a in args if "/" in a and not a.startswith(("/", "{", "'"))
            and "=" not in a and not a.endswith("-")]  # not label/annotation arguments
    for ref in refs:
        short, _, name = ref.partition("/")
        kind = KINDS.get(short)
        if kind is None:
            found.append(f"unknown kind {short!r} in {ref!r}")
        elif not placeholder(name) and not exists(kind, name):
            found.append(f"{kind} {name!r} is not in the manifests")
    if not refs and args and args[0] in KINDS:
        kind = KINDS[args[0]]
        for name in args[1:]:
            if "=" in name or name.endswith("-") or name in ("--raw",):
                continue  # label/annotation/env arguments
            if not placeholder(name) and not exists(kind, name):
                found.append(f"{kind} {name!r} is not in the manifests")
    elif not refs and args and positional[0] not in ("top", "logs"):
        found.append(f"unknown kind {args[0]!r}")
    return found


CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("command", KUBECTL, ids=str)
def test_every_kubectl_command_names_what_the_manifests_ship(command: Command) -> None:
    assert problems(command) == [], str(command)


@pytest.mark.parametrize("text, complaint", [
    ("kubectl -n magtape-sys get pods", "namespace 'magtape-sys'"),
    ("kubectl -n magtape-system get deploy/magtap", "Deployment 'magtap'"),
    ("kubectl -n magtape-system logs deploy/magtape -c magtap", "container 'magtap'"),
    ("kubectl -n magtape-system get pods -l app=magtap", "labels 'app=magtap'"),
    ("kubectl delete validatingwebhookconfiguration magtape", "ValidatingWebhookConfiguration"),
    ("kubectl apply -k overlays/prod", "overlays/prod is not"),
    ("kubectl -n magtape-system set env deploy/magtape -c magtape MAGTAPE_NOPE=1",
     "MAGTAPE_NOPE"),
])
def test_the_checker_catches_a_wrong_name(text: str, complaint: str) -> None:
    found = problems(Command("test", text))
    assert any(complaint in f for f in found), found
