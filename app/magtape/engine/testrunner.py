"""``magtape test``'s child process: regorus compiles the modules once and runs one test
per request.

Why it exists here: regorus is imported only in ``magtape.engine`` (the one place
that knows the engine); ``magtape.ruletest`` (the command: discovery, the parent
side, the reports) talks to this child over the frame protocol of
:mod:`magtape.engine.child`: TEST_COMPILE -> OK (what vetting would refuse) |
ERROR (the errors); TEST_RUN -> TEST_RESULT; TEST_COVERAGE -> TEST_RESULT.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from magtape.engine.child import ChildSide, Op
from magtape.engine.worker import error_location


@dataclass(frozen=True)
class EngineMessage:
    """An error from the engine, reduced to where and what."""

    filename: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.filename is None:
            return self.message
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.message}"



def parse_engine_error(text: str) -> EngineMessage:
    """File, line and message of a regorus error (its source excerpt left out)."""
    filename, line, message = error_location(text)
    return EngineMessage(filename or None, line if filename else None, message)


class TestRunner:
    def __init__(self) -> None:
        self._engine: Any = None

    def handle(self, op: bytes, payload: bytes) -> tuple[bytes, bytes]:
        import regorus

        if op == Op.TEST_COMPILE:
            job = json.loads(payload)
            engine = regorus.Engine()
            engine.set_enable_coverage(bool(job["coverage"]))
            errors = []
            for filename, source in job["files"]:
                try:
                    engine.add_policy(filename, source)
                except RuntimeError as exc:
                    errors.append(asdict(parse_engine_error(str(exc))))
            if errors:
                return Op.ERROR, json.dumps(errors).encode()
            self._engine = engine
            # What loading these policies in MagTape would refuse (magtape.engine.semantics).
            from magtape.engine import semantics

            refusals = [asdict(f) for f in semantics.vet(engine.get_ast_as_json(),
                                                         job.get("vet", []))]
            return Op.OK, json.dumps(refusals).encode()
        if op == Op.TEST_RUN:
            try:
                value = self._engine.eval_rule(payload.decode())
            except RuntimeError as exc:
                failed = {"passed": False, "error": asdict(parse_engine_error(str(exc)))}
                return Op.TEST_RESULT, json.dumps(failed).encode()
            detail = ("" if value is True else
                      "undefined (a condition of the test did not hold)" if value is None
                      else f"evaluated to {json.dumps(value, default=str)}, not true")
            return Op.TEST_RESULT, json.dumps({"passed": value is True, "detail": detail}).encode()
        if op == Op.TEST_COVERAGE:
            report = json.loads(self._engine.get_coverage_report_as_json())
            files = [{"path": f["path"], "covered": f["covered"],
                      "not_covered": f["not_covered"]} for f in report.get("files", [])]
            return Op.TEST_RESULT, json.dumps(files).encode()
        return Op.ERROR, json.dumps([{"filename": None, "line": None,
                                       "message": f"unknown request {op!r}"}]).encode()


def worker_main(memory_mb: int) -> None:
    side = ChildSide(memory_mb)
    runner = TestRunner()
    try:
        while (frame := side.read()) is not None:
            side.write(*runner.handle(frame.op, frame.payload))
    except MemoryError:
        sys.exit(3)  # what magtape.engine.child reads as "memory cap exceeded"


if __name__ == "__main__":
    # magtape.engine.child starts `python -m magtape.engine.testrunner <memory MB>`.
    worker_main(int(sys.argv[1]))
