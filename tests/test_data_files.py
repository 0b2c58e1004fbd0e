"""Data files (``--data``, ``MAGTAPE_DATA_FILES``) that no engine worker would take.

Why it exists: every worker refuses data holding a value JSON cannot carry or
nesting past the engine's recursion limit; such a file made ``magtape check``
wait without end for a worker, and ``magtape serve`` run with none. It is
refused where it is read, naming the file and what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from magtape.cli import main

ALLOWED = REPO / "testing" / "deployments" / "test-deploy01.yaml"


def deep(levels: int) -> str:
    return "y: " + "[" * levels + "1" + "]" * levels + "\n"


@pytest.mark.parametrize("name, content, message", [
    ("inf.yaml", "x: .inf\n", "holds a value JSON cannot carry"),
    ("nan.yaml", "x: {y: [.nan]}\n", "holds a value JSON cannot carry"),
    ("date.yaml", "when: 2024-01-01\n", "quote dates"),
    ("binary.yaml", "x: !!binary aGVsbG8=\n", "holds a value JSON cannot carry"),
    ("deep.yaml", deep(150), "nested deeper than 100 levels"),
])
def test_a_data_file_no_engine_takes_is_refused_naming_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str,
        message: str) -> None:
    data = tmp_path / name
    data.write_text(content)
    code = main(["check", "--data", str(data), str(ALLOWED)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"data file {str(data)!r}" in err and message in err


def test_data_at_the_limit_is_taken(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "deep.yaml"
    data.write_text(deep(98))  # the document, y and 98 lists: 100 levels
    assert main(["check", "--data", str(data), str(ALLOWED)]) == 0, capsys.readouterr()
