"""The engine worker process: regorus holding one policy set and the cluster data.

Started by :mod:`magtape.engine.pool` (serving) and :mod:`magtape.engine.vet`
(vetting) as ``python -m magtape.engine.worker <memory MB>``; it answers one
frame at a time (see :mod:`magtape.engine.child` for the wire format):

``P`` policy set (JSON: modules, per-kind plans and which modules form the
    compiled program)                              -> ``K`` (text: a note) or ``E`` text
``D`` data (the JSON text of ``data``)            -> ``K`` or ``E`` text
``I`` ``<kind>\\n<AdmissionReview JSON>``           -> ``A`` ``<version>\\n`` aggregate
    JSON (``C``: the same, decided by the compiled mode), or
    ``F`` ``<version>\\n{"deny": {policy: value}, "errors": {policy: message}}``
``V`` vet one policy (JSON)                        -> ``K`` JSON verdict
``L`` vet the libraries (JSON)                     -> ``K`` JSON list of errors

Data replaces the engine's data without touching the parsed policies, so a
namespace change costs a JSON parse of ``data``, not a recompile.

The built-in policies (proven against OPA by tests/test_differential.py) run
in regorus' compiled mode (its RVM), several times faster than its
interpreter; any other policy, and any request the compiled mode cannot
answer cleanly, goes to the interpreter (docs/architecture.md).
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from magtape.engine.child import ChildSide, Op

# The JSON plan sent with ``P``: kind -> {"rule": ..., "policies": [[name, package], ...]}.
Plan = dict[str, dict[str, Any]]

# Policy files may be long (a ConfigMap holds up to 1 MiB); regorus' defaults
# reject lines over ~1000 columns, which OPA accepts.
MAX_COL, MAX_FILE_BYTES, MAX_LINES = 1 << 20, 4 << 20, 1 << 17
MAX_MESSAGE = 500  # characters of an error message passed on
UNDEFINED = '"<undefined>"'  # how regorus writes an undefined value in JSON
# The compiled mode stops after 25,000 instructions (about 60 containers); a
# review this large goes straight to the interpreter rather than trying first.
COMPILED_MAX_BYTES = 64 * 1024



def smoke_input(kind: str) -> str:
    """The review vetting runs each policy on: the simplest ``kind`` it must cope with."""
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {
                           "uid": "smoke", "kind": {"kind": kind}, "namespace": "default",
                           "operation": "CREATE", "userInfo": {"username": "smoke"},
                           "object": {"kind": kind, "metadata": {"name": "smoke",
                                                                 "namespace": "default"}}}})


def error_location(exc: BaseException | str) -> tuple[str, int | None, str]:
    """regorus' error as (file, line, message), without the source excerpt or stack dump.

    regorus reports a location as ``--> file:line:col`` and the problem as
    ``error: ...``; the one parser of them (the engine workers, vetting,
    ``magtape test``, ``magtape policy convert``).
    """
    lines = [ln.strip() for ln in str(exc).split("\nStack backtrace:")[0].splitlines()
             if ln.strip()]
    filename, line = "", None
    where = next((ln[4:] for ln in lines if ln.startswith("--> ")), "")
    if where:
        parts = where.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            filename, line = parts[0], int(parts[1])
    fallback = lines[0] if lines else (type(exc).__name__ if isinstance(exc, BaseException)
                                       else "unknown error")
    message = next((ln[7:] for ln in lines if ln.startswith("error: ")), fallback)
    # Messages may quote input values ("Got `<value>`"): bounded for logs and warnings.
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return filename[:MAX_MESSAGE], line, message


def error_text(exc: BaseException) -> str:
    """regorus' error in one line: ``file:line: message``."""
    filename, line, message = error_location(exc)
    return f"{filename}:{line}: {message}" if filename else message


def _failed(exc: BaseException, prefix: str = "") -> tuple[bytes, bytes]:
    filename, line, message = error_location(exc)
    return Op.OK, json.dumps({"ok": False, "error": prefix + message + v0_hint(message),
                             "filename": filename, "line": line}).encode()


# regorus' parse errors for Rego v0 syntax (the original MagTape's policies).
_V0_SIGNS = ("`if` keyword is required", "`contains` keyword is required",
             "could not find function re_match")


def v0_hint(message: str) -> str:
    """What to do when ``message`` says the module is written in Rego v0."""
    if not any(sign in message for sign in _V0_SIGNS):
        return ""
    return (" -- this module looks like Rego v0 (the original MagTape's policy format): "
            "convert it to Rego v1 with `magtape policy convert FILE` (docs/upgrading.md)")


def _semantics(engine: Any, filenames: list[str]) -> bytes | None:
    """A refusal verdict when the modules ``filenames`` use what the engine would
    not decide as OPA does (magtape.engine.semantics); None when they do not."""
    from magtape.engine import semantics

    findings = semantics.vet(engine.get_ast_as_json(), filenames)
    if not findings:
        return None
    first = findings[0]
    return json.dumps({"ok": False, "error": next(semantics.summary(findings)),
                       "filename": first.filename, "line": first.line}).encode()


class EngineProcess:
    """What one engine worker process does with each request (``main`` reads the frames).
    Not a :class:`magtape.background.Worker` (a thread) nor a pool's child handle."""

    def __init__(self) -> None:
        import regorus

        self._regorus = regorus
        self._engine: Any = None
        self._vm: Any = None  # regorus' compiled mode (Rvm) for the proven built-ins
        self._plan: Plan = {}
        self._data = "{}"
        self._version = b"0"

    def new_engine(self, modules: list[list[str]]) -> Any:
        engine = self._regorus.Engine()
        engine.set_policy_length_config(max_col=MAX_COL, max_file_bytes=MAX_FILE_BYTES,
                                        max_lines=MAX_LINES)
        for filename, source in modules:
            engine.add_policy(filename, source)
        return engine

    # ------------------------------------------------------------- serving
    def load(self, payload: bytes) -> tuple[bytes, bytes]:
        """Take a policy set; ``K`` with a note when only its compiled mode failed."""
        doc = json.loads(payload)
        try:
            engine = self.new_engine(doc["modules"])
            engine.add_data_json(self._data)
        except RuntimeError as exc:
            return Op.ERROR, error_text(exc).encode()
        self._engine, self._plan = engine, doc["plan"]
        self._version = str(doc["version"]).encode()
        self._vm, note = None, b""
        program = doc.get("program") or []
        if program:
            entrypoints = sorted({p["compiled"] for p in self._plan.values() if "compiled" in p})
            try:
                compiled = self._regorus.Program.compile_from_modules(
                    "{}", [tuple(doc["modules"][i]) for i in program], entrypoints)
                vm = self._regorus.Rvm()
                vm.load_program(compiled)
                vm.set_data_json(self._data)
                self._vm = vm
            except RuntimeError as exc:
                note = ("the built-in policies run interpreted, regorus could not compile "
                        f"them: {error_text(exc)}").encode()
        return Op.OK, note

    def set_data(self, payload: bytes) -> tuple[bytes, bytes]:
        text = payload.decode()
        if self._engine is not None:
            try:
                self._engine.clear_data()
                self._engine.add_data_json(text)
            except RuntimeError as exc:
                self._engine.clear_data()
                self._engine.add_data_json(self._data)
                return Op.ERROR, error_text(exc).encode()
        if self._vm is not None:
            self._vm.set_data_json(text)  # valid JSON: the interpreter took it
        self._data = text
        return Op.OK, b""

    def evaluate(self, payload: bytes) -> tuple[bytes, bytes]:
        kind_bytes, _, review = payload.partition(b"\n")
        plan = self._plan.get(kind_bytes.decode())
        if plan is None or self._engine is None:
            return Op.ALLOWED, self._version + b"\n{}"
        engine, text = self._engine, review.decode()
        if self._vm is not None and "compiled" in plan and len(review) <= COMPILED_MAX_BYTES:
            answer = self._compiled(plan, text)
            if answer is not None:
                return Op.COMPILED, self._version + b"\n" + answer
        engine.set_input_json(text)
        try:
            # Fast path: one rule gathering every applicable policy's deny, so
            # library rules shared by the policies are evaluated once.
            answer = engine.eval_rule_as_json(plan["rule"]).encode()
            return Op.ALLOWED, self._version + b"\n" + answer
        except RuntimeError:
            pass
        # Some policy failed: ask each on its own, so the error is that policy's alone.
        deny: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, package in plan["policies"]:
            try:
                if engine.eval_rule(f"data.{package}.matches") is not True:
                    continue
                deny[name] = json.loads(engine.eval_rule_as_json(f"data.{package}.deny"))
            except RuntimeError as exc:
                errors[name] = error_text(exc)
        return Op.FINDINGS, self._version + b"\n" + json.dumps({"deny": deny,
                                                          "errors": errors}).encode()

    def _compiled(self, plan: dict[str, Any], text: str) -> bytes | None:
        """The aggregate from the compiled mode (the proven built-ins) and the
        interpreter (the rest); None sends the request down the interpreter's path,
        which pins any error on its policy."""
        try:
            self._vm.set_input_json(text)
            out: str = self._vm.execute_entry_point(plan["compiled"])
            # An undefined value that leaked into a result is a compiled-mode defect
            # (see docs/architecture.md): the interpreter decides instead.
            if UNDEFINED in out:
                return None
            if "rest" not in plan:
                return out.encode()
            self._engine.set_input_json(text)
            rest: str = self._engine.eval_rule_as_json(plan["rest"])
        except RuntimeError:
            return None
        return merge_objects(out, rest).encode()

    # ------------------------------------------------------------- vetting
    def vet_libraries(self, payload: bytes) -> tuple[bytes, bytes]:
        errors = []
        for filename, source in json.loads(payload)["modules"]:
            try:
                engine = self.new_engine([[filename, source]])
            except RuntimeError as exc:
                _, line, message = error_location(exc)
                errors.append({"filename": filename, "line": line,
                               "message": message + v0_hint(message)})
                continue
            refused = _semantics(engine, [filename])
            if refused is not None:
                doc = json.loads(refused)
                errors.append({"filename": filename, "line": doc["line"],
                               "message": doc["error"]})
        return Op.OK, json.dumps(errors).encode()

    def vet_policy(self, payload: bytes) -> tuple[bytes, bytes]:
        """Compile one policy with the libraries, read its metadata, smoke-run it."""
        doc = json.loads(payload)
        package = doc["package"]
        try:
            engine = self.new_engine([*doc["libraries"], *doc["modules"]])
        except RuntimeError as exc:
            return _failed(exc)
        refused = _semantics(engine, [name for name, _ in doc["modules"]])
        if refused is not None:
            return Op.OK, refused
        engine.set_input_json("{}")
        if not _has_rule(engine, f"data.{package}.deny"):
            return Op.OK, json.dumps({"ok": False, "error": "the policy defines no `deny` rule: "
                                     "define deny contains {\"msg\": ...} if {...}"}).encode()
        try:
            metadata = (json.loads(engine.eval_rule_as_json(f"data.{package}.policy_metadata"))
                        if _has_rule(engine, f"data.{package}.policy_metadata") else None)
        except RuntimeError as exc:
            return _failed(exc)
        # One applicability rule for every engine, OPA's entrypoint included: the
        # kind is in policy_metadata.targets and `matches` is true. OPA cannot tell an
        # absent `matches` from a false one, so a policy must define it.
        # (Missing metadata is reported first, by the parent.)
        if metadata is not None and not _has_rule(engine, f"data.{package}.matches"):
            return Op.OK, json.dumps({"ok": False, "error": (
                "the policy defines no `matches` rule: add `matches if "
                "input.request.kind.kind in policy_metadata.targets` (a policy applies only "
                "when `matches` is true, in MagTape and under OPA alike; docs/policies.md)"
            )}).encode()
        targets = metadata.get("targets") if isinstance(metadata, dict) else None
        try:
            for kind in targets if isinstance(targets, list) else []:
                engine.set_input_json(smoke_input(str(kind)))
                engine.eval_rule(f"data.{package}.matches")
                engine.eval_rule_as_json(f"data.{package}.deny")
        except RuntimeError as exc:
            return _failed(exc, f"evaluating the policy on a minimal {kind} failed: ")
        return Op.OK, json.dumps({"ok": True, "metadata": metadata}).encode()


def merge_objects(first: str, second: str) -> str:
    """Two JSON objects' text with disjoint keys as one object's text."""
    first, second = first.strip(), second.strip()
    if second == "{}":
        return first
    if first == "{}":
        return second
    return first[:-1] + "," + second[1:]


def _has_rule(engine: Any, path: str) -> bool:
    """Whether a module defines the rule at ``path`` (evaluated on the current input;
    an error other than "no such rule" means it exists)."""
    try:
        engine.eval_rule(path)
    except RuntimeError as exc:
        return "not a valid rule path" not in str(exc)
    except TypeError:  # a value regorus cannot hand to Python (a set of objects)
        return True
    return True


def main(memory_mb: int) -> None:

    side = ChildSide(memory_mb)
    worker = EngineProcess()
    handlers = {Op.LOAD: worker.load, Op.DATA: worker.set_data, Op.EVALUATE: worker.evaluate,
                Op.VET_POLICY: worker.vet_policy, Op.VET_LIBRARIES: worker.vet_libraries}
    while (frame := side.read()) is not None:
        handler = handlers.get(frame.op)
        if handler is None:
            side.write(Op.ERROR, b"unknown request " + frame.op)
            continue
        try:
            op, payload = handler(frame.payload)
        except MemoryError:
            sys.exit(3)  # the parent reports this as the memory cap (see Child)
        except Exception as exc:  # a defect here must not look like a policy verdict
            # The traceback goes to this child's stderr (the pod's log); the answer says what.
            traceback.print_exc(file=sys.stderr)
            op, payload = Op.ERROR, f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE].encode()
        side.write(op, payload)


if __name__ == "__main__":
    main(int(sys.argv[1]))
