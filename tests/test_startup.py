"""What starting the service says and reads: warnings only when they are true, and never the
developer's `.env` during the tests."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from refunds import create_app
from tests.conftest import make_settings
from tests.fakes import FakeGateway

ROOT = Path(__file__).resolve().parents[1]
LINK_SECRET = "an-approval-link-secret-of-32-chars-or-more"


def start_warnings(caplog: pytest.LogCaptureFixture, database_url: str, **settings: object) -> list[str]:
    caplog.set_level(logging.WARNING)
    app = create_app(make_settings(database_url, **settings), gateway=FakeGateway())
    app.extensions["refund_service"].db.dispose()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_links_with_a_public_address_and_no_slack_links_start_without_a_warning(
    caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    warnings = start_warnings(caplog, database_url, approval_link_secret=LINK_SECRET,
                              public_base_url="https://refunds.example.com", slack_approval_links=False)
    assert warnings == []


def test_slack_links_without_a_public_address_warn_once_naming_both_settings(
    caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    warnings = start_warnings(caplog, database_url, approval_link_secret=LINK_SECRET, slack_approval_links=True)
    assert len(warnings) == 1
    assert "SLACK_APPROVAL_LINKS" in warnings[0] and "PUBLIC_BASE_URL" in warnings[0]


def test_a_env_file_in_the_repository_root_does_not_change_the_test_run(tmp_path: Path) -> None:
    """`cp .env.example .env` and fill it in, as the README says, then run tests: they still pass.

    Runs the tests that read the environment (start-up without a Stripe key, the flask command, the
    service under gunicorn) in a copy of the repository whose `.env` sets everything differently.
    """
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".*_cache", ".hypothesis", "*.db", "*.db-*", "sandbox", ".env"))
    hostile = (ROOT / ".env.example").read_text()
    for name, value in {"STRIPE_SECRET_KEY": "sk_test_from_the_dotenv_file", "INTAKE_TOKEN": "intake-from-dotenv-0000",
                        "DATABASE_URL": f"sqlite:///{copy}/from-dotenv.db", "AUTO_APPROVE_THRESHOLD": "0",
                        "TWO_PERSON_THRESHOLD": "1", "APPROVAL_LINK_SECRET": "x" * 40,
                        "PUBLIC_BASE_URL": "https://dotenv.example.com"}.items():
        hostile = hostile.replace(f"\n{name}=", f"\n{name}={value}\n# was: {name}=")
    (copy / ".env").write_text(hostile)
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "FLASK_SKIP_DOTENV")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_config.py",
         "tests/e2e/test_service_e2e.py::test_start_up_without_a_stripe_key_stops_with_one_line_naming_it",
         "tests/e2e/test_service_e2e.py::test_large_refund_is_approved_by_a_named_manager_and_executed_once"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert " failed" not in result.stdout and " passed" in result.stdout
    assert not (copy / "from-dotenv.db").exists()



def service_env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment for the service on a SQLite file in `tmp_path` (never the developer's)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "FLASK_SKIP_DOTENV": "1",
            "STRIPE_SECRET_KEY": "sk_test_cli", "INTAKE_TOKEN": "x" * 32,
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}

def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`flask --app app ARGS` as an operator runs it, on a SQLite file in tmp_path."""
    env = service_env(tmp_path)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_first_start_says_in_one_line_which_migrations_it_applied_and_later_ones_say_nothing(
    tmp_path: Path
) -> None:
    first = cli(tmp_path, "approvers", "list")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [line for line in first.stderr.splitlines() if "refunds.db" in line]
    [line] = first.stderr.splitlines()
    assert "database migrated: applied 0001 (initial schema), 0002 (" in line
    assert "alembic" not in first.stderr
    again = cli(tmp_path, "approvers", "list")
    assert (again.returncode, again.stderr) == (0, "")


def test_db_upgrade_names_what_it_applied_and_says_when_there_was_nothing(tmp_path: Path) -> None:
    from refunds.db import Database

    db = Database(f"sqlite:///{tmp_path}/fresh.db")
    try:
        applied = db.upgrade()
        assert [name.split()[0] for name in applied][:3] == ["0001", "0002", "0003"]
        assert applied[0] == "0001 (initial schema)"
        assert db.upgrade() == []
    finally:
        db.dispose()
    first = cli(tmp_path, "db", "upgrade")
    assert first.stdout.startswith("applied 0001 (initial schema), 0002 ("), first.stdout
    again = cli(tmp_path, "db", "upgrade")
    assert again.stdout.strip().endswith("nothing to apply"), again.stdout


def test_skipped_tests_are_summed_up_once_per_reason_and_failures_come_last(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(5))\n"
        "def test_skipped(n):\n    pytest.skip('no database here')\n"
        "def test_fails():\n    assert 1 == 2\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c",
                             str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = result.stdout.splitlines()
    assert [line.strip() for line in lines if "no database here" in line] == ["5 x no database here"], result.stdout
    assert not [line for line in lines if line.startswith("SKIPPED")]
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAILED"))
    grouped = next(i for i, line in enumerate(lines) if "no database here" in line)
    assert grouped < failed


def test_head_revision_names_the_newest_migration_in_migrations() -> None:
    from refunds.db import HEAD_REVISION, head_revision

    assert HEAD_REVISION == head_revision(), "a migration was added: set refunds.db.HEAD_REVISION to its revision"


def test_a_start_on_a_migrated_database_does_not_load_alembic(tmp_path: Path) -> None:
    """Alembic costs each process about 10 MB for its whole life; a migrated database needs none of it."""
    assert cli(tmp_path, "db", "upgrade").returncode == 0
    program = ("import sys, refunds; refunds.create_app(); "
               "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'mako'}))")
    env = service_env(tmp_path)
    started = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert (started.returncode, started.stdout.strip()) == (0, "[]"), started.stderr


def test_a_service_on_sqlite_without_slack_loads_neither_the_postgresql_dialect_nor_slack_sdk(tmp_path: Path) -> None:
    # Each costs every gunicorn worker about 2 MB of resident memory (issue 8: RSS per worker). Migrated
    # first, as before a deploy's workers start: alembic itself loads the dialects.
    assert cli(tmp_path, "db", "upgrade").returncode == 0
    probe = ("import sys, app; app.create_app(); print(' '.join(m for m in sys.modules "
             "if m.startswith(('sqlalchemy.dialects.postgresql', 'slack_sdk'))))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=service_env(tmp_path),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
