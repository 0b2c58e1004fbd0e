"""One rule for what a policy directory holds: served, tested and shipped alike.

The engine (``modules_from_dirs``), ``magtape test`` (``find_rego_files``) and
hack/render_policies.py (``collect_groups``) walk with ``sources.rego_files``,
so a work-in-progress folder cannot be served and tested yet never shipped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from conftest import REPO
from magtape.engine.sources import modules_from_dirs
from magtape.ruletest import find_rego_files

POLICY = "package kubernetes.admission.{name}\n\nimport rego.v1\n\ndeny := set()\n"


def render_module() -> Any:
    spec = importlib.util.spec_from_file_location("render_policies",
                                                  REPO / "hack" / "render_policies.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_policies"] = module
    spec.loader.exec_module(module)
    return module


def tree(root: Path) -> Path:
    for rel in ("shipped/policy.rego", "shipped/policy_test.rego", "_wip/policy.rego",
                ".git/x.rego", "shipped/.hidden.rego"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(POLICY.format(name=path.parent.name.strip("._")))
    return root


def test_engine_test_runner_and_renderer_agree_on_what_a_directory_holds(
        tmp_path: Path) -> None:
    root = tree(tmp_path / "policies")
    served = {Path(m.filename).relative_to(root).as_posix() for m in modules_from_dirs([root])}
    tested = {p.relative_to(root).as_posix() for p in find_rego_files([root])}
    rendered = {src for group in render_module().collect_groups(root) for src in group.sources}
    assert served == {"shipped/policy.rego"}
    assert tested == {"shipped/policy.rego", "shipped/policy_test.rego"}
    assert {Path(s).name for s in rendered} == {"policy.rego"}
    assert not any("_wip" in s or ".git" in s for s in rendered)


def test_a_file_named_on_the_command_line_is_always_read(tmp_path: Path) -> None:
    wip = tree(tmp_path / "policies") / "_wip" / "policy.rego"
    assert [m.filename for m in modules_from_dirs([wip])] == [str(wip)]
    assert find_rego_files([wip]) == [wip]
