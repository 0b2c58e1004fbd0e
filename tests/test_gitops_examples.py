"""The Argo CD and Flux objects users copy install MagTape at a released tag, and are valid.

docs/examples/ holds them; docs/install.md shows the same objects. They are
validated against the openAPIV3Schema of the official CRDs (vendored in
tests/schemas/gitops/, each naming its source and commit), made strict as
`kubectl apply --validate=strict` is: an unknown field is an error, not
silently pruned. They must name this project's repository at the running
version's tag (magtape.project) and an overlay that exists.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import REPO
from magtape import project

EXAMPLES = REPO / "docs" / "examples"
SCHEMAS = REPO / "tests" / "schemas" / "gitops"


def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for f in SCHEMAS.glob("*.json"):
        doc = json.loads(f.read_text())
        found[(f"{doc['group']}/{doc['version']}", doc["kind"])] = strict(doc["schema"])
    return found


def strict(schema: Any) -> Any:
    """``schema`` with unknown fields rejected where the CRD lists the known ones."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(obj: dict[str, Any]) -> None:
    schema = schemas()[(obj["apiVersion"], obj["kind"])]
    jsonschema.Draft7Validator(schema).validate(obj)


EXAMPLE_OBJECTS = [(f.name, i, o) for f in sorted(EXAMPLES.glob("*.yaml"))
                   for i, o in enumerate(objects(f))]


def test_every_gitops_kind_has_a_schema() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for _, _, o in EXAMPLE_OBJECTS}
    assert kinds == {("argoproj.io/v1alpha1", "Application"),
                     ("source.toolkit.fluxcd.io/v1", "GitRepository"),
                     ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")}
    assert kinds <= set(schemas())


@pytest.mark.parametrize(("name", "index", "obj"), EXAMPLE_OBJECTS,
                         ids=[f"{n}#{i}" for n, i, _ in EXAMPLE_OBJECTS])
def test_examples_validate_against_the_crd_schemas(name: str, index: int,
                                                   obj: dict[str, Any]) -> None:
    validate(obj)


def test_the_validation_can_fail() -> None:
    (app,) = objects(EXAMPLES / "argocd-application.yaml")
    typo = copy.deepcopy(app)
    typo["spec"]["source"]["targetRevison"] = typo["spec"]["source"].pop("targetRevision")
    with pytest.raises(jsonschema.ValidationError, match="targetRevison"):
        validate(typo)
    git, kustomization = objects(EXAMPLES / "flux-kustomization.yaml")
    wrong_type = copy.deepcopy(kustomization)
    wrong_type["spec"]["prune"] = "yes"
    with pytest.raises(jsonschema.ValidationError, match="'yes' is not of type 'boolean'"):
        validate(wrong_type)
    no_url = copy.deepcopy(git)
    del no_url["spec"]["url"]
    with pytest.raises(jsonschema.ValidationError, match="'url' is a required property"):
        validate(no_url)


def test_examples_are_pinned_to_the_release_tag_of_an_overlay_that_exists() -> None:
    (app,) = objects(EXAMPLES / "argocd-application.yaml")
    source = app["spec"]["source"]
    assert source["repoURL"].removesuffix(".git") == project.REPOSITORY
    assert source["targetRevision"] == project.TAG
    assert (REPO / source["path"] / "kustomization.yaml").is_file()
    git, kustomization = objects(EXAMPLES / "flux-kustomization.yaml")
    assert git["spec"]["url"] == project.REPOSITORY and git["spec"]["ref"] == {"tag": project.TAG}
    assert kustomization["spec"]["sourceRef"] == {"kind": "GitRepository",
                                                  "name": git["metadata"]["name"]}
    assert (REPO / kustomization["spec"]["path"] / "kustomization.yaml").is_file()


def test_install_doc_shows_the_examples_and_the_pinned_remote_base() -> None:
    text = (REPO / "docs" / "install.md").read_text()
    blocks = [yaml.safe_load_all(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    gitops = ("argoproj.io/", "source.toolkit.fluxcd.io/", "kustomize.toolkit.fluxcd.io/")
    shown = [d for docs in blocks for d in docs
             if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith(gitops)]
    assert shown == [o for _, _, o in EXAMPLE_OBJECTS]
    host = project.REPOSITORY.removeprefix("https://")
    assert f"kubectl apply -k 'https://{host}//overlays/production?ref={project.TAG}'" in text
