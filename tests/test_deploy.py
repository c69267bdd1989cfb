"""deploy/compose.yaml and the Dockerfile, checked without a Docker engine (none on these machines).

The compose file is validated against the Compose Specification's JSON schema after interpolating ${...} as
Compose does, then held to what the README promises: health checks where others wait, memory inside a volume
that .env cannot move, and membot pointed at the compose services.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator

from membot.bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
# compose-spec.json: the Compose Specification schema (github.com/compose-spec/compose-spec, Apache-2.0), as
# vendored in the check-jsonschema 0.39.0 wheel on PyPI (sha256 d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64).
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"

# What an operator puts in deploy/.env for Compose's own ${...}.
SAMPLE_ENV = {"POSTGRES_PASSWORD": "example-password", "MEMBOT_SLACK_PORT": "3000"}
SLACK_PORT = 3000

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's substitution of values: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        if op in (":-", "-"):
            return arg
        raise KeyError(f"{name} has no value and no default")

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return _interpolate(raw, SAMPLE_ENV)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for the short (`src:dst[:mode]`) and long forms."""
    targets = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        targets[target.rstrip("/") or "/"] = source
    return targets


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_compose_file_is_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    errors = sorted(Draft202012Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    """The validator really checks services, not only that the YAML parses."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["postgres"]["healthcheck"]["retries"] = "five"
    broken["services"]["membot"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert len(list(Draft202012Validator(schema).iter_errors(broken))) >= 2


def test_the_password_is_required_not_defaulted(raw: dict[str, Any]) -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _interpolate(raw, {})


def test_every_service_waited_on_has_a_healthcheck_and_is_waited_on_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    waited_on = set()
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form to wait for health"
        for dependency, condition in depends_on.items():
            assert condition.get("condition") == "service_healthy", f"{name} -> {dependency}"
            waited_on.add(dependency)
    assert {"postgres", "milvus", "etcd", "minio"} <= waited_on
    for name in waited_on:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"{name} has no health check"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "http://localhost:9091/healthz" in services["milvus"]["healthcheck"]["test"]


def test_milvus_is_the_standalone_server_with_its_etcd_and_minio(compose: dict[str, Any]) -> None:
    milvus = compose["services"]["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:")
    assert milvus["command"] == ["milvus", "run", "standalone"]
    env = _environment(milvus)
    assert env["ETCD_ENDPOINTS"].split(":")[0] == "etcd"
    assert env["MINIO_ADDRESS"].split(":")[0] == "minio"
    published = {str(port).rsplit(":", 1)[-1] for port in milvus["ports"]}
    assert {"19530", "9091"} <= published


def test_membot_home_is_set_in_environment_and_inside_a_named_volume(compose: dict[str, Any]) -> None:
    membot = compose["services"]["membot"]
    # In `environment`, which Compose lets win over env_file: a MEMBOT_HOME in .env cannot move it.
    assert membot["env_file"] == ".env" or ".env" in str(membot["env_file"])
    home = _environment(membot)["MEMBOT_HOME"].rstrip("/")
    targets = _volume_targets(membot)
    mount = next((t for t in targets if home == t or home.startswith(t.rstrip("/") + "/")), None)
    assert mount is not None, f"MEMBOT_HOME={home} is in none of {sorted(targets)}"
    assert targets[mount] in compose["volumes"], "a named volume, not a bind mount of some host folder"
    instructions = _dockerfile()
    assert ("ENV", f"MEMBOT_HOME={home}") in instructions
    assert any(op == "VOLUME" and home in args for op, args in instructions)


def test_membot_points_at_the_compose_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    env = _environment(services["membot"])
    database = urlsplit(env["MEMBOT_DATABASE_URL"])
    assert database.scheme == "postgresql+asyncpg"
    assert database.hostname == "postgres" and services["postgres"]["image"].startswith("postgres:")
    postgres = _environment(services["postgres"])
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]
    milvus = urlsplit(env["MEMBOT_MILVUS_URI"])
    assert (milvus.scheme, milvus.hostname, milvus.port) == ("http", "milvus", 19530)
    # membot reads these names: what the container gets is what it uses.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.home_dir == Path(env["MEMBOT_HOME"])
    assert settings.database_url == env["MEMBOT_DATABASE_URL"]
    assert settings.milvus_uri == env["MEMBOT_MILVUS_URI"]
    assert settings.slack_port == SLACK_PORT


def test_slacks_http_port_is_published(compose: dict[str, Any]) -> None:
    membot = compose["services"]["membot"]
    assert _environment(membot)["MEMBOT_SLACK_PORT"] == str(SLACK_PORT)
    assert any(str(port).rsplit(":", 1)[-1] == str(SLACK_PORT) for port in membot["ports"])


def test_membot_is_built_from_the_repository_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["services"]["membot"]["build"]
    assert (COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_the_dockerfile_runs_python_3_12_or_newer_as_a_user_and_exposes_slack() -> None:
    instructions = _dockerfile()
    base = next(args for op, args in instructions if op == "FROM")
    version = re.match(r"python:3\.(\d+)", base)
    assert version and int(version.group(1)) >= 12, base
    assert any(op == "EXPOSE" and str(SLACK_PORT) in args.split() for op, args in instructions)
    user = [args for op, args in instructions if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert instructions[-1] == ("CMD", '["membot", "serve"]')


def test_the_load_command_is_documented_where_operators_look() -> None:
    header = COMPOSE.read_text().split("\n\n", 3)
    readme = (ROOT / "README.md").read_text()
    for text in ("".join(header[:3]), readme):
        assert "docker compose -f deploy/compose.yaml run --rm" in text
        assert "membot load directory" in text
