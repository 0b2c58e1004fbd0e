"""Command line: ``magtape serve | check | audit | ui | review | explain | test | init``.

Flags override the environment (``MAGTAPE_*``); both are parsed into one
:class:`~magtape.settings.Settings`. Every flag is declared here; each
subcommand's implementation, and what it depends on (the engine, the
Kubernetes client, cryptography), is imported only when that subcommand runs,
so ``magtape --version`` and ``--help`` start instantly.

Exit codes: 0 success, 1 a policy failure/denial (check, test), 2 usage,
input or configuration errors, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from magtape.policy import DenyLevel
from magtape.remediation import DEFAULT_DOCS_URL
from magtape.report import FORMATS as OUTPUT_FORMATS
from magtape.settings import MAX_THREADS, ConfigError, Settings, parse_address

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# --fail-on SEVERITY: "fail on a failure of at least this severity", the
# CI-friendly spelling of the deny level, whose scale runs the other way.
FAIL_ON = {"LOW": DenyLevel.HIGH, "MED": DenyLevel.MED, "HIGH": DenyLevel.LOW}
# check --from-cluster: check's output formats that `magtape audit` prints, as its names.
CLUSTER_OUTPUTS = {"text": "table", "json": "json"}



class _Version(argparse.Action):
    """``--version``: the installed version, read only when asked (importing
    importlib.metadata is slow, and ``magtape check`` in CI starts often)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from magtape import __version__

        print(f"magtape {__version__}")
        parser.exit()

def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("magtape: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "init":
        # Its flags belong to magtape.kube.init, which imports the Kubernetes
        # client and cryptography: parsed only when init runs.
        args = _init_parser().parse_args(rest, namespace=args)
    elif rest and args.command != "test":  # test's flags belong to magtape.ruletest
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings = _apply_flags(Settings.from_env(os.environ), args)
    except ConfigError as exc:
        print(f"magtape: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "explain":
        return _explain(args.check, settings.docs_url)
    _configure_logging(settings, quiet=args.command in ("check", "test", "review", "audit"))
    if args.command == "serve":
        from magtape.server import serve

        try:
            return serve(settings, list(argv) if argv is not None else sys.argv[1:])
        except (ConfigError, OSError, ValueError) as exc:
            print(f"magtape: cannot start: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "check" and args.from_cluster:
        return _check_cluster(settings, args)
    if args.command == "check" and args.all_namespaces:
        print("magtape check: --all-namespaces applies to --from-cluster only", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        from magtape.check import run_check

        return run_check(settings, _check_options(args), out=sys.stdout, err=sys.stderr)
    if args.command == "audit":
        from magtape.audit.command import AuditCommandOptions, run_audit

        return run_audit(settings, AuditCommandOptions(
            output=args.output, namespaces=tuple(args.namespace or ()),
            all_namespaces=args.all_namespaces, jobs=args.jobs), out=sys.stdout, err=sys.stderr)
    if args.command == "ui":
        from magtape.ui.command import UiOptions, run_ui

        address = parse_address(args.ui_listen)
        return run_ui(settings, UiOptions(host=address.host, port=address.port,
                                          history=args.event_history,
                                          allowed_hosts=tuple(args.allowed_host or ())),
                      err=sys.stderr)
    if args.command == "review":
        return _review(args.paths, args.namespace)
    if args.command == "test":
        from magtape.ruletest import main as test_main

        return test_main(rest)
    if args.command == "policy":
        from magtape.policytool import main as policy_main

        return policy_main(args)
    if args.command == "init":
        from magtape.kube.init import main as init_main

        return init_main(settings, args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _apply_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    changes: dict[str, object] = {}
    http: dict[str, object] = {}
    engine: dict[str, object] = {}
    if getattr(args, "listen", None):
        http["listen"] = _address("--listen", args.listen)
    if getattr(args, "metrics_listen", None):
        http["metrics_listen"] = _address("--metrics-listen", args.metrics_listen)
    if getattr(args, "policies", None):
        engine["policy_dirs"] = tuple(args.policies)
    if getattr(args, "data", None):
        engine["data_files"] = tuple(args.data)
    if getattr(args, "threads", None) is not None:
        http["threads"] = args.threads
    if getattr(args, "deny_level", None):
        changes["deny_level"] = DenyLevel(args.deny_level)
        changes["deny_level_source"] = "--deny-level"
    if getattr(args, "docs_url", None):
        changes["docs_url"] = _url("--docs-url", args.docs_url)
    if getattr(args, "fail_on", None):
        changes["deny_level"] = FAIL_ON[args.fail_on]
        changes["deny_level_source"] = "--fail-on"
    pod_security = {"override": getattr(args, "pod_security", None)}
    return settings.with_overrides(http=http, engine=engine, pod_security=pod_security,
                                   **changes)


def _check_options(args: argparse.Namespace) -> Any:
    """The ``check`` flags as :class:`magtape.check.CheckOptions`.

    A new check flag is declared in :func:`_check_parser` and mapped here.
    """
    from magtape.check import CheckOptions

    return CheckOptions(paths=tuple(args.paths), namespace=args.namespace, output=args.output,
                        jobs=args.jobs, ignore=tuple(args.ignore or ()),
                        allow_empty=args.allow_empty,
                        exceptions=tuple(args.exceptions or ()),
                        enforcement=args.enforcement or "", old=args.old or "",
                        username=args.as_user or "magtape-check")


def _check_cluster(settings: Settings, args: argparse.Namespace) -> int:
    """``check --from-cluster``: the live objects, by ``magtape audit``'s engine.

    One engine for "what is in the cluster": the audit's (its kinds, scope,
    cluster data, exceptions and overrides as the cluster holds them). The
    flags that describe offline input have no meaning here and are refused.
    """
    from magtape.audit.command import AuditCommandOptions, run_audit

    refused = [flag for flag, given in (
        ("PATH", args.paths), ("--exceptions", args.exceptions),
        ("--enforcement", args.enforcement), ("--old", args.old), ("--as", args.as_user),
        ("--ignore", args.ignore)) if given]
    if refused:
        print(f"magtape check: --from-cluster reads the cluster; {', '.join(refused)} "
              "cannot be used with it (the cluster's exceptions and overrides apply)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.output not in CLUSTER_OUTPUTS:
        print(f"magtape check: --from-cluster prints {' or '.join(CLUSTER_OUTPUTS)} "
              f"(as `magtape audit`), not {args.output}", file=sys.stderr)
        return EXIT_USAGE
    return run_audit(settings, AuditCommandOptions(
        output=CLUSTER_OUTPUTS[args.output],
        namespaces=(args.namespace,) if args.namespace else (),
        all_namespaces=args.all_namespaces, jobs=args.jobs), out=sys.stdout, err=sys.stderr)


def _review(paths: Sequence[str], namespace: str) -> int:
    """``magtape review``: one AdmissionReview per object, for curl and debugging."""
    from magtape.check.manifests import InputError, read_manifests
    from magtape.review import make_review

    try:
        found = read_manifests(paths or ["-"], sys.stdin)
    except InputError as exc:
        print(f"magtape review: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for m in found.manifests:
        sys.stdout.write(make_review(m.obj, m.namespace(namespace)).raw + "\n")
    return 0


def _explain(check: str, docs_url: str) -> int:
    """``magtape explain MT1009``: the check's README, and where it is published."""
    from magtape.remediation import RemediationError, default_catalogue

    try:
        remedy = default_catalogue(docs_url).get(check)
    except RemediationError as exc:
        print(f"magtape explain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if remedy is None or not remedy.readme:
        known = ", ".join(r.id for r in default_catalogue(docs_url))
        print(f"magtape explain: no built-in check {check!r}; known: {known}", file=sys.stderr)
        return EXIT_USAGE
    with open(remedy.readme, encoding="utf-8") as f:
        sys.stdout.write(f.read().rstrip("\n") + "\n")
    sys.stdout.write(f"\nHow to fix: {remedy.hint}\nOnline: {remedy.url}\n")
    return 0


def _url(flag: str, raw: str) -> str:
    if not raw.startswith(("https://", "http://")):
        raise ConfigError(f"{flag}={raw!r} is invalid: accepted an http:// or https:// URL")
    return raw


def _address(flag: str, raw: str) -> object:
    try:
        return parse_address(raw)
    except ValueError:
        raise ConfigError(f"{flag}={raw!r} is invalid: accepted HOST:PORT") from None


def _configure_logging(settings: Settings, quiet: bool) -> None:
    level = {"WARN": "WARNING"}.get(settings.log_level.value, settings.log_level.value)
    from magtape.text import safe_handler

    # Every line bounded and escaped: log lines carry client-chosen names.
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level),
        handlers=[safe_handler(sys.stderr, "%(asctime)s %(levelname)s %(name)s: %(message)s")],
    )
    # waitress warns about its task-queue depth on every queued request under a
    # burst; that floods the log exactly when it matters least. Saturation shows
    # in magtape_admission_duration_seconds instead.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def _choice(kind: str, accepted: Sequence[str]) -> Any:
    def parse(raw: str) -> str:
        if raw.upper() not in accepted:
            raise argparse.ArgumentTypeError(
                f"invalid {kind} {raw!r}: accepted {', '.join(accepted)}")
        return raw.upper()
    return parse


def _deny_level(raw: str) -> str:
    parse = _choice("deny level", tuple(DenyLevel.__members__))
    return str(parse(raw))


DENY_LEVEL_HELP = ("OFF, LOW, MED or HIGH: how strict to be. LOW denies only HIGH-severity "
                   "failures, MED denies MED and HIGH, HIGH denies every failure, OFF none")


def _pod_security(raw: str) -> Any:
    from magtape.podsecurity import CHOSEN_LEVELS, VERSION_ACCEPTED, PodSecurity

    try:
        return PodSecurity.parse(raw)
    except ValueError:
        levels = ", ".join(lv.value for lv in CHOSEN_LEVELS)
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not LEVEL[:VERSION]: LEVEL {levels}; VERSION {VERSION_ACCEPTED}"
        ) from None


POD_SECURITY_HELP = ("evaluate the Pod Security Standards checks as if every namespace carried "
                     "this level: privileged, baseline or restricted, optionally :VERSION "
                     "(v1.N or latest, the default), e.g. restricted or baseline:v1.25")


def _listen(raw: str) -> str:
    try:
        parse_address(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {raw!r}") from None
    return raw


def _positive(raw: str, maximum: int | None = None) -> int:
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1 or (maximum is not None and n > maximum):
        accepted = ">= 1" if maximum is None else f"from 1 to {maximum}"
        raise argparse.ArgumentTypeError(f"expected a whole number {accepted}, got {raw!r}")
    return n


def _threads(raw: str) -> int:
    """``--threads``: as MAGTAPE_THREADS accepts (no thread: nothing would answer)."""
    return _positive(raw, MAX_THREADS)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magtape", description=__doc__.splitlines()[0])
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the admission webhook")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="admission listener (MAGTAPE_LISTEN, default 127.0.0.1:5000)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="metrics/health listener (MAGTAPE_METRICS_LISTEN, default "
                            "127.0.0.1:9090)")
    _policy_flags(serve)
    serve.add_argument("--threads", type=_threads, metavar="N",
                       help="worker threads, 1-256 (MAGTAPE_THREADS, default 4)")
    serve.add_argument("--deny-level", type=_deny_level, metavar="LEVEL",
                       help=DENY_LEVEL_HELP + " (MAGTAPE_DENY_LEVEL, default LOW)")

    _check_parser(sub.add_parser(
        "check", help="check manifests offline, as the webhook would",
        description="Check manifests offline, as the webhook would. Exit 0: nothing failed at "
                    "the deny level; 1: something did; 2: bad input, or nothing was checked."))

    audit = sub.add_parser(
        "audit", help="audit what runs in the cluster (kubeconfig), as the background audit does",
        description="Evaluate the objects in the cluster as admission would now and print the "
                    "findings (docs/audit.md). Exit 0: nothing would be denied at the deny "
                    "level; 1: something would; 2: the cluster or the policies cannot be read.")
    audit.add_argument("--output", "-o", choices=("table", "json", "html"), default="table",
                       help="table (default), json (the PolicyReports the audit writes) or "
                            "html (one self-contained page)")
    audit.add_argument("--deny-level", type=_deny_level, metavar="LEVEL",
                       help=DENY_LEVEL_HELP + " (default MAGTAPE_DENY_LEVEL or LOW)")
    audit.add_argument("--namespace", "-n", action="append", metavar="NS",
                       help="only this namespace, repeatable (default: the opted-in ones)")
    audit.add_argument("--all-namespaces", "-A", action="store_true",
                       help="every namespace, opted in or not")
    audit.add_argument("--pod-security", type=_pod_security, metavar="LEVEL[:VERSION]",
                       help=POD_SECURITY_HELP + ": what would fail per namespace and control")
    audit.add_argument("--jobs", "-j", type=_positive, default=1, metavar="N",
                       help="evaluate N objects in parallel (default 1)")
    _docs_flag(audit)
    _policy_flags(audit, "the cluster's policy ConfigMaps, as the webhook loads them")

    ui = sub.add_parser(
        "ui", help="serve the read-only compliance page (docs/ui.md)",
        description="Serve the read-only compliance page: namespaces, checks, blocked and "
                    "warned admissions, exceptions, read through watches with the kubeconfig's "
                    "or the pod's identity (docs/ui.md).")
    ui.add_argument("--listen", dest="ui_listen", metavar="HOST:PORT", default="127.0.0.1:8080",
                    type=_listen, help="where to serve (default 127.0.0.1:8080: loopback, "
                                       "reached with kubectl port-forward)")
    ui.add_argument("--allowed-host", action="append", metavar="NAME",
                    help="a host name the page may be called by besides 127.0.0.1, localhost "
                         "and ::1, e.g. an authenticating proxy's (repeatable); any other Host "
                         "gets 421, so a web page cannot read it through DNS rebinding")
    ui.add_argument("--event-history", type=_positive, default=5000, metavar="N",
                    help="admission Events kept after the API server deletes them (default "
                         "5000)")
    ui.add_argument("--deny-level", type=_deny_level, metavar="LEVEL",
                    help=DENY_LEVEL_HELP + " (the webhook's MAGTAPE_DENY_LEVEL; default LOW)")
    _docs_flag(ui)

    review = sub.add_parser("review", help="print the AdmissionReview the API server would "
                                           "send for each object (one JSON per line)")
    review.add_argument("paths", nargs="*", metavar="PATH")
    review.add_argument("--namespace", "-n", default="",
                        help="namespace for objects that do not name one (default: default)")

    explain = sub.add_parser("explain", help="print a check's documentation: magtape explain "
                                             "MT1009")
    explain.add_argument("check", metavar="CHECK", help="check ID (MT1009) or policy name")
    _docs_flag(explain)

    # Flags parsed by magtape.ruletest when test runs; --help is handled there too.
    sub.add_parser("test", add_help=False,
                   help="run the Rego unit tests (test_* rules) of policies with MagTape's "
                        "engine, as `opa test` does (magtape test --help)")

    policy = sub.add_parser("policy", help="work on policy files (magtape policy convert)")
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    conv = actions.add_parser(
        "convert", help="convert Rego v0 policies (the original MagTape's) to Rego v1",
        description="Convert Rego v0 policies (the original MagTape's format) to Rego v1: "
                    "`import rego.v1`, `if` and `contains`, re_match -> regex.match. Takes "
                    ".rego files, directories and ConfigMap manifests (docs/upgrading.md). "
                    "Exit 0: converted; 2: an input could not be read or converted.")
    conv.add_argument("paths", nargs="+", metavar="PATH",
                      help=".rego file, directory of them, ConfigMap YAML, or - for stdin")
    conv.add_argument("--write", "-w", action="store_true",
                      help="rewrite the files in place (default: print the one result)")

    # Flags parsed by _init_parser when init runs; --help is handled there too.
    sub.add_parser("init", add_help=False,
                   help="create/renew the TLS certificate and caBundle (init step)")
    return p


def _check_parser(check: argparse.ArgumentParser) -> None:
    check.add_argument("paths", nargs="*", metavar="PATH",
                       help="files or directories of YAML/JSON manifests; - for stdin "
                            "(default: stdin)")
    check.add_argument("--namespace", "-n", default="",
                       help="namespace for objects that do not name one (default: default)")
    level = check.add_mutually_exclusive_group()
    level.add_argument("--deny-level", type=_deny_level, metavar="LEVEL",
                       help=DENY_LEVEL_HELP + " (default MAGTAPE_DENY_LEVEL or LOW)")
    level.add_argument("--fail-on", type=_choice("severity", tuple(FAIL_ON)), metavar="SEVERITY",
                       help="LOW, MED or HIGH: exit 1 when a failure of at least this severity "
                            "is found (--fail-on HIGH is --deny-level LOW, --fail-on LOW is "
                            "--deny-level HIGH)")
    check.add_argument("--pod-security", type=_pod_security, metavar="LEVEL[:VERSION]",
                       help=POD_SECURITY_HELP)
    check.add_argument("--output", "-o", choices=OUTPUT_FORMATS, default="text",
                       help="text (default), json, junit, sarif (code scanning), github "
                            "(workflow annotations) or html (one self-contained page)")
    check.add_argument("--jobs", "-j", type=_positive, default=1, metavar="N",
                       help="check in N processes: the input is split into N parts, each "
                            "parsed and evaluated by its own process and engine worker; the "
                            "report is the same as with -j 1 (default 1)")
    check.add_argument("--ignore", action="append", metavar="GLOB",
                       help="leave out files and directories matching GLOB when walking a "
                            "directory (relative path or name), repeatable; also read from "
                            ".magtapeignore")
    check.add_argument("--allow-empty", action="store_true",
                       help="exit 0 when no object or no policy was read (default: exit 2)")
    # Decide as the webhook would with the cluster's enforcement state (docs/exceptions.md).
    check.add_argument("--exceptions", action="append", metavar="FILE|DIR",
                       help="MagTapeException objects to apply (expired ones do not), "
                            "repeatable")
    check.add_argument("--enforcement", metavar="FILE",
                       help="enforcement overrides: the magtape-enforcement ConfigMap or its "
                            "enforcement.yaml document")
    check.add_argument("--old", metavar="FILE",
                       help="the objects as they are now: an input object with the same kind, "
                            "namespace and name is checked as an UPDATE from it")
    check.add_argument("--as", dest="as_user", metavar="USER",
                       help="the user the requests come from (default magtape-check); a "
                            "controller identity (MAGTAPE_CONTROLLER_IDENTITIES, e.g. "
                            "system:serviceaccount:kube-system:replicaset-controller) lets an "
                            "object whose controller ownerReference names an --old object "
                            "inherit its owner's failures, as in the webhook")
    # The cluster instead of files: the audit's engine (docs/audit.md).
    check.add_argument("--from-cluster", action="store_true",
                       help="check the live objects of the kubeconfig's current context, "
                            "as `magtape audit` does (its scope: opted-in namespaces; -n NS "
                            "or -A to choose); -o text or json")
    check.add_argument("--all-namespaces", "-A", action="store_true",
                       help="with --from-cluster: every namespace, opted in or not")
    _docs_flag(check)
    _policy_flags(check)


def _init_parser() -> argparse.ArgumentParser:
    from magtape.kube.init import add_arguments

    init = argparse.ArgumentParser(prog="magtape init",
                                   description="create/renew the TLS certificate and caBundle")
    add_arguments(init)
    return init


def _docs_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs-url", metavar="URL",
                   help="where the policy READMEs are published: links are URL/<policy>/"
                        f"README.md (MAGTAPE_DOCS_URL, default {DEFAULT_DOCS_URL})")


def _policy_flags(p: argparse.ArgumentParser, default: str = "the built-in policies") -> None:
    p.add_argument("--policies", action="append", metavar="DIR",
                   help=f"policy directory, repeatable (default: {default})")
    p.add_argument("--data", action="append", metavar="FILE",
                   help="JSON/YAML file merged into `data`, repeatable")


if __name__ == "__main__":
    sys.exit(main())
