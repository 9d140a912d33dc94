"""The deployment examples (Procfile, systemd units, compose file) name commands and files that exist.

Docker is not installed where the tests run, so the compose file is checked against the parts of
the Compose specification it uses: it parses as YAML, has only top-level keys the spec allows, and
every service, volume and dependency it names is declared.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TOP_LEVEL = {"version", "name", "include", "services", "networks", "volumes", "configs", "secrets"}


def _compose() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_file_runs_postgresql_the_migrations_the_service_and_a_worker() -> None:
    compose = _compose()
    assert set(compose) - COMPOSE_TOP_LEVEL <= {k for k in compose if k.startswith("x-")}
    services = compose["services"]
    assert isinstance(services, dict)
    assert set(services) == {"db", "migrate", "web", "worker"}
    assert services["web"]["command"] == [".venv/bin/gunicorn", "-c", "deploy/gunicorn.conf.py"]
    assert services["worker"]["command"] == [".venv/bin/flask", "--app", "app", "worker"]
    assert services["migrate"]["command"] == [".venv/bin/flask", "--app", "app", "db", "upgrade"]
    for name in ("migrate", "web", "worker"):
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert (ROOT / "deploy" / service["env_file"]).resolve() == ROOT / ".env"
    assert services["web"]["environment"]["WORKER_IN_PROCESS"] == "false"
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]  # only the proxy on this host reaches it


def test_every_compose_dependency_and_volume_is_declared() -> None:
    compose = _compose()
    services = compose["services"]
    assert isinstance(services, dict)
    volumes = compose["volumes"]
    assert isinstance(volumes, dict)
    for service in services.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in services
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in volumes
    assert (ROOT / "deploy" / "Dockerfile").is_file()


def test_the_procfile_runs_gunicorn_with_the_repository_configuration_and_the_worker() -> None:
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert lines == {"web": ".venv/bin/gunicorn -c deploy/gunicorn.conf.py",
                     "worker": ".venv/bin/flask --app app worker"}


def test_the_systemd_units_restart_on_failure_as_a_dedicated_user_from_the_repository() -> None:
    for name, command in (("refunds-web", "gunicorn -c deploy/gunicorn.conf.py"),
                          ("refunds-worker", "flask --app app worker")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(ROOT / "deploy" / "systemd" / f"{name}.service")
        service = unit["Service"]
        assert service["Restart"] == "on-failure"
        assert service["User"] == "refunds"
        assert service["ExecStart"] == f"{service['WorkingDirectory']}/.venv/bin/{command}"
        assert unit["Install"]["WantedBy"] == "multi-user.target"
