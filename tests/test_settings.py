"""Settings.from_env: defaults, every accepted spelling, and every error message."""

from __future__ import annotations

from dataclasses import replace

import pytest

from magtape.policy import DenyLevel
from magtape.settings import Address, ConfigError, FailurePolicy, Settings


def test_defaults_match_the_documentation() -> None:
    s = Settings.from_env({})
    assert s.deny_level is DenyLevel.LOW
    assert s.engine.failure_policy is FailurePolicy.FAIL
    assert s.notify.events_enabled is True and s.slack.enabled is False
    assert s.http.listen == Address("127.0.0.1", 5000)
    assert s.http.max_body_bytes == 3 * 1024 * 1024


@pytest.mark.parametrize("raw, expected", [
    ("TRUE", True), ("true", True), ("1", True), ("yes", True),
    ("FALSE", False), ("false", False), ("0", False), ("no", False),
])
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"MAGTAPE_SLACK_ENABLED": raw}).slack.enabled is expected


@pytest.mark.parametrize("level", ["OFF", "LOW", "MED", "HIGH", "low", "High"])
def test_deny_level_and_its_alias(level: str) -> None:
    assert Settings.from_env({"MAGTAPE_DENY_LEVEL": level}).deny_level is DenyLevel(level.upper())
    assert Settings.from_env({"MAGTAPE_DENY_VOLUME": level}).deny_level is DenyLevel(level.upper())


def test_deny_level_wins_over_alias() -> None:
    env = {"MAGTAPE_DENY_LEVEL": "HIGH", "MAGTAPE_DENY_VOLUME": "OFF"}
    assert Settings.from_env(env).deny_level is DenyLevel.HIGH


def test_lists_and_addresses() -> None:
    s = Settings.from_env({
        "MAGTAPE_POLICY_DIRS": "a, b,,c", "MAGTAPE_LISTEN": ":8080",
        "MAGTAPE_METRICS_LISTEN": "[::1]:9000", "MAGTAPE_SLACK_ALLOWED_HOSTS": "x.example",
        "MAGTAPE_SLACK_WEBHOOK_URL_BASE": "https://relay.internal:8443",
    })
    assert s.engine.policy_dirs == ("a", "b", "c")
    assert s.http.listen == Address("0.0.0.0", 8080)
    assert s.http.metrics_listen == Address("::1", 9000)
    assert s.slack.allowed_host_set == {"x.example", "relay.internal"}


# Every variable with a parser, a bad value, and what the message must say is accepted.
ERRORS = [
    ("MAGTAPE_DENY_LEVEL", "bogus", "OFF, LOW, MED, HIGH"),
    ("MAGTAPE_DENY_VOLUME", "max", "OFF, LOW, MED, HIGH"),
    ("MAGTAPE_POLICY_ENGINE", "wasm", "embedded, opa"),
    ("MAGTAPE_ENGINE_FAILURE_POLICY", "Maybe", "Fail, Ignore"),
    ("MAGTAPE_ENGINE_TIMEOUT_SECONDS", "soon", "a number from 0.01 to 30"),
    ("MAGTAPE_ENGINE_TIMEOUT_SECONDS", "0", "a number from 0.01 to 30"),
    # Past every bound, or not finite: refused here, not overflowing later.
    ("MAGTAPE_ENGINE_TIMEOUT_SECONDS", "inf", "a number from 0.01 to 30"),
    ("MAGTAPE_ENGINE_TIMEOUT_SECONDS", "3600", "a number from 0.01 to 30"),
    ("MAGTAPE_EXCEPTION_MAX_DAYS", "1e9", "a number from 1 to 3,650"),
    ("MAGTAPE_EXCEPTION_REMINDER_HOURS", "inf", "a number from 0 to 8,760"),
    ("MAGTAPE_AUDIT_LEASE_SECONDS", "inf", "a number from 2 to 3,600"),
    ("MAGTAPE_SLACK_TIMEOUT_SECONDS", "Infinity", "a number from 0.1 to 60"),
    ("MAGTAPE_ENGINE_WORKERS", "1000000", "a whole number from 1 to 64"),
    ("MAGTAPE_ENGINE_MEMORY_MB", "99999999999", "a whole number from 128 to 65,536"),
    ("MAGTAPE_OPA_URL", "http://127.0.0.1:abc", "an http:// or https:// URL"),
    ("MAGTAPE_OPA_URL", "http://127.0.0.1:99999", "an http:// or https:// URL"),
    ("MAGTAPE_LISTEN", "http://x:5000", "no scheme, path or spaces"),
    ("MAGTAPE_LISTEN", "a b:5000", "no scheme, path or spaces"),
    ("MAGTAPE_LISTEN", "[::1:5000", "no scheme, path or spaces"),
    ("MAGTAPE_SLACK_WEBHOOK_URL_BASE", "ftp://fwd", "a host, HOST:PORT or an https:// URL"),
    ("MAGTAPE_SLACK_ALLOWED_HOSTS", "https://hooks.slack.com", "a comma-separated list of host"),
    ("MAGTAPE_SLACK_ALLOWED_HOSTS", "hooks.slack.com:443", "(no scheme, port or path)"),
    ("MAGTAPE_OPA_URL", "localhost:8181", "an http:// or https:// URL"),
    ("MAGTAPE_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    ("MAGTAPE_LISTEN", "5000", "HOST:PORT"),
    ("MAGTAPE_LISTEN", "host:99999", "HOST:PORT"),
    ("MAGTAPE_METRICS_LISTEN", "x:y", "HOST:PORT"),
    ("MAGTAPE_PROCESSES", "0", "a whole number from 1 to 64"),
    ("MAGTAPE_THREADS", "0", "a whole number from 1 to 256"),
    ("MAGTAPE_THREADS", "2.5", "a whole number from 1 to 256"),
    ("MAGTAPE_MAX_BODY_BYTES", "12", "a whole number from 1,024 to 67,108,864"),
    ("MAGTAPE_K8S_EVENTS_ENABLED", "maybe", "TRUE/true/1/yes or FALSE/false/0/no"),
    ("MAGTAPE_SLACK_ENABLED", "on", "TRUE/true/1/yes or FALSE/false/0/no"),
    ("MAGTAPE_SLACK_PASSIVE", "2", "TRUE/true/1/yes or FALSE/false/0/no"),
    ("MAGTAPE_POLICY_DISCOVERY", "sure", "TRUE/true/1/yes or FALSE/false/0/no"),
    ("MAGTAPE_SLACK_TIMEOUT_SECONDS", "-1", "a number from 0.1 to 60"),
    ("MAGTAPE_ALERT_DEDUP_SECONDS", "nan", "a number from 0 to 604,800"),
    ("MAGTAPE_NOTIFY_QUEUE_SIZE", "0", "a whole number from 1 to 1,000,000"),
    ("MAGTAPE_SLACK_WEBHOOK_URL_BASE", "https:///path", "a host, HOST:PORT or an https:// URL"),
    ("MAGTAPE_SLACK_WEBHOOK_URL_BASE", "fwd:port", "a host, HOST:PORT or an https:// URL"),
    ("MAGTAPE_SLACK_WEBHOOK_URL_BASE", "https://u:p@fwd", "a host, HOST:PORT or an https://"),
    ("MAGTAPE_SLACK_ALLOWED_PORTS", "443,99999", "a comma-separated list of ports 1-65535"),
    ("MAGTAPE_SLACK_ALLOWED_PORTS", "https", "a comma-separated list of ports 1-65535"),
]


@pytest.mark.parametrize("raw, netloc", [
    ("forwarder.internal", "forwarder.internal"),
    ("forwarder.internal:8443", "forwarder.internal:8443"),
    ("https://Forwarder.internal:8443/ignored/path", "forwarder.internal:8443"),
    ("https://forwarder.internal", "forwarder.internal"),
])
def test_slack_base_is_parsed_once_into_host_and_port(raw: str, netloc: str) -> None:
    settings = Settings.from_env({"MAGTAPE_SLACK_WEBHOOK_URL_BASE": raw})
    assert settings.slack.url_base == netloc
    assert netloc.split(":")[0] in settings.slack.allowed_host_set


def test_slack_allowed_ports() -> None:
    assert Settings.from_env({}).slack.allowed_port_set == {443}
    assert Settings.from_env({"MAGTAPE_SLACK_ALLOWED_PORTS": "443, 8443"}).slack.allowed_ports \
        == (443, 8443)


@pytest.mark.parametrize("name, value, accepted", ERRORS, ids=[f"{n}={v}" for n, v, _ in ERRORS])
def test_bad_value_names_variable_value_and_accepted(name: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and accepted in message
    assert "\n" not in message


def test_slack_url_is_never_echoed() -> None:
    secret = "ftp://hooks.slack.com/services/T000/B000/XXXXSECRET"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT": secret})
    assert "XXXXSECRET" not in str(info.value)
    assert "MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT" in str(info.value)
    assert "XXXXSECRET" not in repr(Settings.from_env(
        {"MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT": secret.replace("ftp", "https")}))


def test_cli_reports_configuration_errors_with_exit_2(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from magtape.cli import main

    monkeypatch.setenv("MAGTAPE_DENY_LEVEL", "EVERYTHING")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "MAGTAPE_DENY_LEVEL='EVERYTHING'" in err and "OFF, LOW, MED, HIGH" in err


@pytest.mark.parametrize("threads", ["-1", "0", "99999999999999999999", "four"])
def test_the_threads_flag_is_bounded_as_its_variable(capsys: pytest.CaptureFixture[str],
                                                     threads: str) -> None:
    """-1 once wedged the admission port, 0 was silently the default."""
    from magtape.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--threads", threads])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--threads" in err and f"expected a whole number from 1 to 256, got '{threads}'" in err


def test_overrides_merge_into_a_group_and_skip_none() -> None:
    base = Settings.from_env({"MAGTAPE_ENGINE_WORKERS": "3", "MAGTAPE_DENY_LEVEL": "MED"})
    s = base.with_overrides(engine={"timeout_seconds": 3.0, "policy_dirs": None},
                            http={"listen": Address("0.0.0.0", 1)}, deny_level=None)
    assert s.engine == replace(base.engine, timeout_seconds=3.0)  # workers kept
    assert s.http.listen == Address("0.0.0.0", 1) and s.http.threads == base.http.threads
    assert s.deny_level is DenyLevel.MED
    assert base.with_overrides(deny_level=DenyLevel.HIGH).deny_level is DenyLevel.HIGH
    with pytest.raises(TypeError):
        base.with_overrides(engine={"timeout": 3})


def test_policy_namespace_defaults_to_our_own() -> None:
    assert Settings.from_env({"MAGTAPE_NAMESPACE_NAME": "ops"}).policy_namespace == "ops"
    env = {"MAGTAPE_NAMESPACE_NAME": "ops", "MAGTAPE_POLICY_NAMESPACE": "policies"}
    assert Settings.from_env(env).policy_namespace == "policies"


def test_the_first_bad_variable_in_reading_order_is_reported() -> None:
    env = {"MAGTAPE_AUDIT_RATE": "0", "MAGTAPE_K8S_EVENTS_ENABLED": "maybe",
           "MAGTAPE_SLACK_ENABLED": "on", "MAGTAPE_LOG_LEVEL": "LOUD"}
    with pytest.raises(ConfigError, match="MAGTAPE_LOG_LEVEL"):
        Settings.from_env(env)
    del env["MAGTAPE_LOG_LEVEL"]
    with pytest.raises(ConfigError, match="MAGTAPE_K8S_EVENTS_ENABLED"):
        Settings.from_env(env)


@pytest.mark.parametrize("environ, level, source, warned", [
    ({}, "LOW", "default", False),
    ({"MAGTAPE_DENY_VOLUME": "MED"}, "MED", "MAGTAPE_DENY_VOLUME", False),
    ({"MAGTAPE_DENY_LEVEL": "high", "MAGTAPE_DENY_VOLUME": "HIGH"}, "HIGH",
     "MAGTAPE_DENY_LEVEL", False),
    ({"MAGTAPE_DENY_LEVEL": "HIGH", "MAGTAPE_DENY_VOLUME": "OFF"}, "HIGH",
     "MAGTAPE_DENY_LEVEL", True),
])
def test_the_deny_level_says_where_it_came_from(environ: dict[str, str], level: str,
                                                source: str, warned: bool) -> None:
    settings = Settings.from_env(environ)
    assert settings.deny_level.value == level and settings.deny_level_source == source
    assert settings.summary().startswith(f"deny level {level} (from {source}); ")
    assert bool(settings.config_warnings) is warned
    if warned:
        (warning,) = settings.config_warnings
        assert "MAGTAPE_DENY_LEVEL=HIGH and MAGTAPE_DENY_VOLUME=OFF" in warning


def test_the_summary_names_no_secret() -> None:
    url = "https://hooks.slack.com/services/T000/B000/secretsecret"
    settings = Settings.from_env({"MAGTAPE_SLACK_ENABLED": "TRUE",
                                  "MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT": url})
    assert "Slack on, default URL set" in settings.summary()
    assert "secretsecret" not in settings.summary() and "hooks.slack" not in settings.summary()
