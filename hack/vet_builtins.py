#!/usr/bin/env python3
"""Record the built-in policies' vetting verdicts in app/magtape/engine/builtin_vetted.json.

Why it exists: vetting a policy set (magtape.engine.vet) starts a child
process and runs every policy in it, which a webhook start and every
``magtape check`` used to pay for policies that do not change between
releases; with ``-j N`` every part paid it again, on cores that were meant
for the input. The built-ins are vetted here instead, once, with vetting's
own code and the pinned engine, and the engine trusts the record for a set
made only of them. Before writing, both ways the engine loads the built-in
set (compiled mode on and off) are vetted whole, as an untrusted set would
be, so the record only ever says what a child would have said.

``--check`` vets afresh and exits 1 when the committed record differs (run
by ``make check-generated``); without it the record is written.

Usage: hack/vet_builtins.py [--check]
"""

from __future__ import annotations

import argparse
import sys

from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.policyset import group_modules
from magtape.engine.sources import builtin_modules, source_digest
from magtape.engine.vet import BUILTIN_VETTED, BuiltinVerdicts, Vetter, engine_release
from magtape.settings import Settings


def record() -> BuiltinVerdicts:
    """The verdicts a vetting child gives the built-ins now; SystemExit if any fails."""
    release = engine_release()
    if release is None:
        raise SystemExit("vet_builtins: cannot tell which engine release is installed")
    modules = builtin_modules()
    memory_mb = Settings().engine.memory_mb
    for compiled in (True, False):
        engine = EmbeddedEngine(workers=1, compiled=compiled, trust_builtins=False)
        try:
            report = engine.load(modules, {})
        finally:
            engine.close()
        if report.errors:
            raise SystemExit("vet_builtins: the built-in policies fail vetting: "
                             + "; ".join(map(str, report.errors)))
    vetter = Vetter(30.0, memory_mb, trust_builtins=False)
    try:
        result = vetter.vet(group_modules(modules))
    finally:
        vetter.close()
    return BuiltinVerdicts(
        release,
        frozenset(source_digest(m.source) for m in result.libraries),
        {tuple(sorted(source_digest(m.source) for m in v.group.modules)): v.metadata
         for v in result.policies})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the committed record is stale")
    args = parser.parse_args(argv)
    text = record().to_json()
    current = BUILTIN_VETTED.read_text(encoding="utf-8") if BUILTIN_VETTED.exists() else ""
    if args.check:
        if text != current:
            print(f"vet_builtins: {BUILTIN_VETTED} is stale (the built-in policies or the "
                  "engine changed): run `make policies` and commit the result", file=sys.stderr)
            return 1
        print(f"vet_builtins: {BUILTIN_VETTED.name} is up to date")
        return 0
    BUILTIN_VETTED.write_text(text, encoding="utf-8", newline="\n")
    print(f"vet_builtins: {BUILTIN_VETTED.name} "
          + ("updated" if text != current else "unchanged"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
