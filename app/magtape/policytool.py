"""`magtape policy convert`: turn Rego v0 policies (the original MagTape's) into Rego v1.

MagTape, like OPA 1.x, reads Rego v1; a v0 policy is refused at load with a
message naming this command. It takes ``.rego`` files, directories of them,
and ConfigMap manifests (every ``data`` key ending in ``.rego`` is converted,
the rest of the manifest kept), so the documented step for a policy
ConfigMap of the original is one command before ``kubectl apply``
(docs/upgrading.md). The conversion itself is :mod:`magtape.engine.convert`.

Without ``--write`` the result goes to standard output (one input only);
with it, every file is rewritten in place and named on standard error.
Exit 0: converted (or already v1); 2: an input could not be read or converted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import yaml

from magtape.engine.convert import ConvertError, convert

EXIT_OK, EXIT_ERROR = 0, 2


class _Literal(str):
    """A string dumped as a YAML block (``|``), as policy ConfigMaps are written."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def convert_text(name: str, text: str) -> str:
    """A ``.rego`` module's text, or a YAML manifest's with its policies converted."""
    if not name.endswith((".yaml", ".yml")):
        return convert(text, name)
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        data = doc.get("data") if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" \
            else None
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if isinstance(key, str) and key.endswith(".rego") and isinstance(value, str):
                data[key] = _Literal(convert(value, f"{name}:{key}"))
    return str(yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True))


def _inputs(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*.rego") if f.is_file())
        else:
            found.append(p)
    return found


def run_convert(paths: Sequence[str], write: bool, out: TextIO, err: TextIO) -> int:
    if paths == ["-"] and not write:
        try:
            out.write(convert_text("stdin.rego", sys.stdin.read()))
        except ConvertError as exc:
            print(f"magtape policy convert: {exc}", file=err)
            return EXIT_ERROR
        return EXIT_OK
    files = _inputs(paths)
    if not write and len(files) != 1:
        print("magtape policy convert: without --write, give exactly one file (the result "
              f"goes to standard output); got {len(files)}", file=err)
        return EXIT_ERROR
    status = EXIT_OK
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
            converted = convert_text(f.name, text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ConvertError) as exc:
            print(f"magtape policy convert: {f}: {exc}", file=err)
            status = EXIT_ERROR
            continue
        if not write:
            out.write(converted)
        elif converted != text:
            f.write_text(converted, encoding="utf-8")
            print(f"converted {f}", file=err)
        else:
            print(f"unchanged {f} (already Rego v1)", file=err)
    return status


def main(args: argparse.Namespace) -> int:
    return run_convert(args.paths, args.write, sys.stdout, sys.stderr)
