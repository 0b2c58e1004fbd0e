"""Command line: ``magtape serve | check | review | test | init``.

Flags override the environment (``MAGTAPE_*``); both are parsed into one
:class:`~magtape.settings.Settings`. Exit codes: 0 success, 1 a policy
failure/denial (check, test), 2 usage, input or configuration errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from magtape import __version__
from magtape.policy import DenyLevel
from magtape.settings import ConfigError, Settings, parse_address

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings = Settings.from_env(os.environ)
        settings = _apply_flags(settings, args)
    except ConfigError as exc:
        print(f"magtape: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings, quiet=args.command in ("check", "test"))
    if args.command == "serve":
        from magtape.server import serve

        try:
            return serve(settings)
        except (ConfigError, OSError, ValueError) as exc:
            print(f"magtape: cannot start: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "check":
        from magtape.check import run_check

        return run_check(settings, args.paths or ["-"], namespace=args.namespace,
                         output=args.output, out=sys.stdout, err=sys.stderr)
    if args.command == "review":
        from magtape.check import print_reviews

        return print_reviews(args.paths or ["-"], args.namespace, out=sys.stdout, err=sys.stderr)
    if args.command == "test":
        from magtape.ruletest import main as test_main

        return test_main([*args.dirs, *(["--verbose"] if args.verbose else []),
                          "--timeout", str(args.timeout)])
    if args.command == "init":
        from magtape.kube.init import main as init_main

        return init_main(settings, args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _apply_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    changes: dict[str, object] = {}
    if getattr(args, "listen", None):
        changes["listen"] = _address("--listen", args.listen)
    if getattr(args, "metrics_listen", None):
        changes["metrics_listen"] = _address("--metrics-listen", args.metrics_listen)
    if getattr(args, "policies", None):
        changes["policy_dirs"] = tuple(args.policies)
    if getattr(args, "data", None):
        changes["data_files"] = tuple(args.data)
    if getattr(args, "threads", None):
        changes["threads"] = args.threads
    if getattr(args, "deny_level", None):
        changes["deny_level"] = DenyLevel(args.deny_level.upper())
    return settings.with_overrides(**changes)


def _address(flag: str, raw: str) -> object:
    try:
        return parse_address(raw)
    except ValueError:
        raise ConfigError(f"{flag}={raw!r} is invalid: accepted HOST:PORT") from None


def _configure_logging(settings: Settings, quiet: bool) -> None:
    level = {"WARN": "WARNING"}.get(settings.log_level.value, settings.log_level.value)
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # waitress warns about its task-queue depth on every queued request under a
    # burst; that floods the log exactly when it matters least. Saturation shows
    # in magtape_admission_duration_seconds instead.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def _deny_level(raw: str) -> str:
    if raw.upper() not in DenyLevel.__members__:
        raise argparse.ArgumentTypeError(
            f"invalid deny level {raw!r}: accepted {', '.join(DenyLevel.__members__)}")
    return raw.upper()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magtape", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"magtape {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the admission webhook")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="admission listener (MAGTAPE_LISTEN, default 127.0.0.1:5000)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="metrics/health listener (MAGTAPE_METRICS_LISTEN, default "
                            "127.0.0.1:9090)")
    _policy_flags(serve)
    serve.add_argument("--threads", type=int, metavar="N",
                       help="worker threads (MAGTAPE_THREADS, default 4)")
    serve.add_argument("--deny-level", type=_deny_level, metavar="LEVEL",
                       help="OFF, LOW, MED or HIGH (MAGTAPE_DENY_LEVEL, default LOW)")

    check = sub.add_parser("check", help="check manifests offline, as the webhook would")
    check.add_argument("paths", nargs="*", metavar="PATH",
                       help="files or directories of YAML/JSON manifests; - for stdin")
    check.add_argument("--namespace", "-n", default="",
                       help="namespace for objects that do not name one (default: default)")
    check.add_argument("--deny-level", type=_deny_level, metavar="LEVEL",
                       help="OFF, LOW, MED or HIGH (default MAGTAPE_DENY_LEVEL or LOW)")
    check.add_argument("--output", "-o", choices=("text", "json", "junit"), default="text")
    _policy_flags(check)

    review = sub.add_parser("review", help="print the AdmissionReview the API server would "
                                           "send for each object (one JSON per line)")
    review.add_argument("paths", nargs="*", metavar="PATH")
    review.add_argument("--namespace", "-n", default="",
                        help="namespace for objects that do not name one (default: default)")

    test = sub.add_parser("test", help="run the Rego unit tests (test_* rules) in DIRs "
                                       "(default: the built-in policies)")
    test.add_argument("dirs", nargs="*", metavar="DIR")
    test.add_argument("--verbose", "-v", action="store_true", help="list every test")
    test.add_argument("--timeout", type=float, default=300,
                      help="seconds before a runaway test run is stopped (default 300)")

    init = sub.add_parser("init", help="create/renew the TLS certificate and caBundle (init step)")
    from magtape.kube.init import add_arguments

    add_arguments(init)
    return p


def _policy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policies", action="append", metavar="DIR",
                   help="policy directory, repeatable (default: the built-in policies)")
    p.add_argument("--data", action="append", metavar="FILE",
                   help="JSON/YAML file merged into `data`, repeatable")


if __name__ == "__main__":
    sys.exit(main())
