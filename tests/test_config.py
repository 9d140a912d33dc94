import pytest

from refunds.config import ConfigError, load_settings

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


def test_every_setting_is_listed_in_env_example_and_the_readme() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    read = set(re.findall(r'env, "([A-Z_]+)"', (root / "refunds" / "config.py").read_text()))
    example = set(re.findall(r"^([A-Z_]+)=", (root / ".env.example").read_text(), flags=re.M))
    readme = (root / "README.md").read_text()
    assert read == example
    assert all(f"`{name}`" in readme for name in read), [n for n in read if f"`{n}`" not in readme]
