"""`magtape test --against-opa`: the same tests and samples under MagTape's engine and real OPA.

Real OPA defines what a policy means; MagTape's engine (regorus) should give
the same answers, and vetting refuses what it knows it would not (docs/
policies.md, "Exact numbers"). This lets a policy author check both on their
own policies, with the ``opa`` binary they have: every ``test_*`` rule is run
by ``opa test`` and by MagTape, and every sample (``samples/*.yaml`` below
the given directories, wrapped in the AdmissionReview the API server would
send, with the file's Namespace objects as ``data.kubernetes.namespaces``) is
decided by ``opa eval`` and by MagTape's engine. Every difference is printed:
a test that passes under one engine only, a sample whose messages differ for
a policy, and a policy MagTape refuses to load (OPA still evaluates it, so the
author sees what it would have said). OPA answers all samples in one query.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

OPA_TIMEOUT_SECONDS = 300.0


class AgainstOpaError(Exception):
    """OPA cannot be run or did not answer; the message says what to do."""


@dataclass(frozen=True)
class Sample:
    path: str
    review: str  # the AdmissionReview's JSON text
    namespaces: Mapping[str, Any]


def find_opa(given: str | None) -> str:
    found = shutil.which(given or "opa")
    if found is None:
        raise AgainstOpaError(
            f"--against-opa needs the OPA binary: {given or 'opa'} is not on PATH "
            "(install OPA 1.x, or name it with --opa PATH)")
    return found


def _opa(opa: str, *args: str) -> str:
    proc = subprocess.run([opa, *args], capture_output=True, text=True, check=False,
                          timeout=OPA_TIMEOUT_SECONDS)
    if proc.returncode not in (0, 2) or not proc.stdout.strip():
        raise AgainstOpaError(f"`opa {args[0]}` failed: {(proc.stderr or proc.stdout)[-800:]}")
    return proc.stdout


def opa_tests(opa: str, files: Sequence[Path]) -> dict[str, bool]:
    """``opa test``: pass or fail per test rule (``data.<package>.<rule>``)."""
    out = _opa(opa, "test", "--format", "json", *map(str, files))
    results, _ = json.JSONDecoder().raw_decode(out)
    return {f"data.{r['package'].removeprefix('data.')}.{r['name']}":
            not r.get("fail") and not r.get("error") for r in results}


def read_samples(dirs: Sequence[str]) -> list[Sample]:
    from magtape.check.manifests import read_manifests
    from magtape.review import make_review

    files = sorted({str(f) for d in dirs for f in Path(d).glob("**/samples/*.y*ml")
                    if f.is_file()})
    samples = []
    for f in files:
        found = read_manifests([f], io.StringIO())
        namespaces = {m.name: m.obj for m in found.manifests if m.kind == "Namespace"}
        for m in found.manifests:
            if m.kind != "Namespace":
                samples.append(Sample(f"{f}#{m.index}", make_review(m.obj, m.namespace(
                    "default")).raw, namespaces))
    return samples


def opa_decisions(opa: str, files: Sequence[Path], packages: Sequence[str],
                  samples: Sequence[Sample]) -> list[dict[str, list[str]]]:
    """Per sample, per policy package: OPA's sorted deny messages when ``matches``."""
    per_package = ", ".join(
        f'"{p}": sort([m | data.{p}.matches with input as rv with data.kubernetes.namespaces '
        f"as ns; d := data.{p}.deny[_] with input as rv with data.kubernetes.namespaces "
        f'as ns; m := d.msg])' for p in packages)
    query = (f"[r | c := input.cases[_]; rv := c.review; ns := c.namespaces; "
             f"r := {{{per_package}}}]")
    with tempfile.TemporaryDirectory(prefix="magtape-against-opa-") as tmp:
        cases = Path(tmp) / "cases.json"
        cases.write_text('{"cases": [' + ",".join(
            f'{{"review": {s.review}, "namespaces": {json.dumps(s.namespaces)}}}'
            for s in samples) + "]}", encoding="utf-8")
        out = _opa(opa, "eval", "--format", "json", "--input", str(cases),
                   *(a for f in files for a in ("--data", str(f))), query)
    doc = json.loads(out)
    if "result" not in doc:
        raise AgainstOpaError(f"`opa eval` gave no result: {out[-800:]}")
    value: list[dict[str, list[str]]] = doc["result"][0]["expressions"][0]["value"]
    return value


def magtape_decisions(files: Sequence[Path], samples: Sequence[Sample]
                      ) -> tuple[list[str], list[str], list[dict[str, list[str]]]]:
    """The packages that load, the load errors, and per sample per package MagTape's
    sorted deny messages (policy errors as ``error: ...``)."""
    from magtape.engine.embedded import EmbeddedEngine
    from magtape.policy import PolicyModule
    from magtape.review import parse_review

    modules = [PolicyModule(str(f), str(f), f.read_text(encoding="utf-8")) for f in files]
    engine = EmbeddedEngine(workers=1)
    try:
        report = engine.load(modules, {})
        packages = sorted(p.package for p in report.policies)
        by_name = {p.name: p.package for p in report.policies}
        errors = [str(e) for e in report.errors]
        decided = []
        for s in samples:
            engine.update_data({"kubernetes": {"namespaces": dict(s.namespaces)}})
            ev = engine.evaluate(parse_review(s.review.encode()))
            row: dict[str, list[str]] = {p: [] for p in packages}
            for r in ev.results:
                row[by_name[r.policy]] = sorted(v.msg for v in r.violations)
            for e in ev.policy_errors:
                row[by_name[e.policy]] = [f"error: {e.message}"]
            decided.append(row)
        return packages, errors, decided
    finally:
        engine.close()


def compare(dirs: Sequence[str], files: Sequence[Path], magtape_tests: Mapping[str, bool],
            opa: str, out: TextIO) -> int:
    """Print every difference between the engines; the number of differences."""
    differences = 0
    version = _opa(opa, "version").splitlines()[0]
    out.write(f"\nagainst real OPA ({opa}, {version}):\n")
    theirs = opa_tests(opa, files)
    for name in sorted(set(magtape_tests) | set(theirs)):
        ours, their = magtape_tests.get(name), theirs.get(name)
        if ours != their:
            differences += 1
            out.write(f"DIFF test {name}: MagTape {_verdict(ours)}, OPA {_verdict(their)}\n")
    policy_files = [f for f in files if not f.name.endswith("_test.rego")]
    samples = read_samples(dirs)
    packages, load_errors, ours_by_sample = magtape_decisions(policy_files, samples)
    for e in load_errors:
        differences += 1
        out.write(f"REFUSED by MagTape, evaluated by OPA: {e}\n")
    refused = _opa_packages(policy_files) - set(packages)
    all_packages = sorted(set(packages) | refused)
    theirs_by_sample = opa_decisions(opa, policy_files, all_packages, samples) \
        if samples and all_packages else []
    for s, ours_row, their_row in zip(samples, ours_by_sample, theirs_by_sample, strict=False):
        for p in all_packages:
            if p in refused:
                if their_row.get(p):
                    out.write(f"  {s.path}: OPA says for refused {p}: {their_row[p]}\n")
                continue
            if ours_row.get(p, []) != their_row.get(p, []):
                differences += 1
                out.write(f"DIFF sample {s.path}, policy {p}:\n"
                          f"  MagTape: {ours_row.get(p, [])}\n  OPA:     {their_row.get(p, [])}\n")
    out.write(f"{len(theirs)} tests and {len(samples)} samples compared: "
              f"{differences} difference{'' if differences == 1 else 's'}\n")
    return differences


def _opa_packages(files: Sequence[Path]) -> set[str]:
    """Policy packages (those defining ``deny``) among ``files``, read from the text."""
    from magtape.engine.policyset import package_of

    found = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        package = package_of(text)
        if package and any(line.startswith("deny") for line in text.splitlines()):
            found.add(package)
    return found


def _verdict(passed: bool | None) -> str:
    return "did not run it" if passed is None else "passed" if passed else "failed"
