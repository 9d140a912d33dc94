import dataclasses
import re
from pathlib import Path

import pytest

from refunds.config import VARIABLES, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]

GOOD = {"STRIPE_SECRET_KEY": "sk_test_abc", "INTAKE_TOKEN": "x" * 32}


def test_defaults_are_the_embedded_database_and_a_5000_threshold() -> None:
    settings = load_settings(GOOD)
    assert settings.database_url == "sqlite:///refunds.db"
    assert settings.auto_approve_threshold == 5000
    assert settings.slack_webhook_url is None
    assert settings.stripe_max_network_retries == 2


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INTAKE_TOKEN": "x" * 32}, "STRIPE_SECRET_KEY"),
        ({**GOOD, "STRIPE_SECRET_KEY": "pk_test_public"}, "STRIPE_SECRET_KEY"),
        ({"STRIPE_SECRET_KEY": "sk_test_abc"}, "INTAKE_TOKEN"),
        ({**GOOD, "INTAKE_TOKEN": "short"}, "INTAKE_TOKEN"),
        ({**GOOD, "AUTO_APPROVE_THRESHOLD": "50.00"}, "AUTO_APPROVE_THRESHOLD"),
        ({**GOOD, "AUTO_APPROVE_THRESHOLD": "-1"}, "AUTO_APPROVE_THRESHOLD"),
        ({**GOOD, "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({**GOOD, "SLACK_WEBHOOK_URL": "hooks.slack.com/x"}, "SLACK_WEBHOOK_URL"),
        ({**GOOD, "WORKER_IN_PROCESS": "maybe"}, "WORKER_IN_PROCESS"),
    ],
)
def test_a_missing_or_malformed_setting_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(named)


def test_secrets_are_not_in_the_settings_repr() -> None:
    settings = load_settings({**GOOD, "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/SECRET"})
    assert "sk_test_abc" not in repr(settings)
    assert "SECRET" not in repr(settings)
    assert "x" * 32 not in repr(settings)


def test_start_up_without_a_stripe_key_exits_with_one_line_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: object) -> None:
    from refunds import create_app

    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.setenv("INTAKE_TOKEN", "x" * 32)
    with pytest.raises(SystemExit) as caught:
        create_app()
    assert str(caught.value).startswith("configuration error: STRIPE_SECRET_KEY is not set")
    assert "\n" not in str(caught.value)


def test_env_example_lists_exactly_the_settings_with_their_defaults() -> None:
    text = (ROOT / ".env.example").read_text()
    lines = text.splitlines()
    written = re.findall(r"^([A-Z_]+)=(.*)$", text, flags=re.M)
    example = dict(written)
    assert len(example) == len(written), "a variable is listed twice"
    assert set(example) == {var.name for var in VARIABLES.values()}
    for field in dataclasses.fields(Settings):
        var = VARIABLES[field.name]
        value = example[var.name]
        default = None if field.default is dataclasses.MISSING else field.default
        if value:
            assert var.parse(value, var.name) == default, f"{var.name}={value} in .env.example, default {default!r}"
        else:
            assert default in (None, ()), f"{var.name} is empty in .env.example, but its default is {default!r}"
        assert lines[lines.index(f"{var.name}={value}") - 1].startswith("# "), f"{var.name} has no comment"


def test_the_readme_configuration_table_names_exactly_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.M)
    assert len(rows) == len(set(rows)), "a variable is listed twice"
    assert set(rows) == {var.name for var in VARIABLES.values()}


def test_every_setting_has_a_one_line_help_and_secrets_stay_out_of_the_repr() -> None:
    settings = load_settings({**GOOD, "INTAKE_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "SLACK_SIGNING_SECRET": "slack-signing-secret", "STRIPE_WEBHOOK_SECRET": "whsec_stripe",
                              "APPROVAL_LINK_SECRET": "l" * 32})
    for name, var in VARIABLES.items():
        assert var.help and "\n" not in var.help, var.name
        assert (f"{name}=" in repr(settings)) is not var.secret, var.name


def test_report_tz_must_be_an_iana_time_zone() -> None:
    with pytest.raises(ConfigError, match="REPORT_TZ must be an IANA time zone"):
        load_settings({"STRIPE_SECRET_KEY": "sk_test_x", "INTAKE_TOKEN": "x" * 32, "REPORT_TZ": "Mars/Olympus"})
    assert load_settings({"STRIPE_SECRET_KEY": "sk_test_x", "INTAKE_TOKEN": "x" * 32,
                          "REPORT_TZ": "Europe/Paris"}).report_tz == "Europe/Paris"
