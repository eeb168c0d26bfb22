"""docker-compose.yml, Dockerfile and .dockerignore, checked by reading them.

No Docker engine runs where these tests were written, so nothing here builds or starts a
container: the tests check that the files agree with each other, with nginx.conf and
with the hub's settings (shared secret, broker URL, ports, worker addresses, mounts).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from deploy.cluster import NGINX_CONF, REPO_ROOT, UPSTREAM_NAME

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
HUBS = ("hub1", "hub2", "hub3")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def upstream_servers() -> list[str]:
    match = re.search(r"upstream\s+" + UPSTREAM_NAME + r"\s*\{([^}]*)\}", NGINX_CONF.read_text())
    assert match is not None
    body = "\n".join(line.split("#", 1)[0] for line in match.group(1).splitlines())
    return re.findall(r"\bserver\s+(\S+)", body)


def test_services_present(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"redis", "nginx", *HUBS}


def test_workers_share_secret_broker_and_prefix(compose: dict[str, Any]) -> None:
    envs = [services(compose)[name]["environment"] for name in HUBS]
    for env in envs:
        # One variable from the host for every worker: any worker must accept any token.
        assert re.fullmatch(r"\$\{HUB_SECRET:\?[^}]+\}", env["HUB_SECRET"])
        assert env["HUB_HOST"] == "0.0.0.0"
    for key in ("HUB_SECRET", "HUB_BROKER_URL", "HUB_REDIS_PREFIX", "HUB_PORT"):
        assert len({env[key] for env in envs}) == 1, key
    assert sorted(env["HUB_WORKER_ID"] for env in envs) == list(HUBS)


def test_broker_url_points_at_the_redis_service(compose: dict[str, Any]) -> None:
    redis_service = services(compose)["redis"]
    assert str(redis_service["image"]).startswith("redis:")
    assert "healthcheck" in redis_service
    for name in HUBS:
        hub = services(compose)[name]
        url = hub["environment"]["HUB_BROKER_URL"]
        match = re.fullmatch(r"redis://:\$\{REDIS_PASSWORD\}@([^:/]+):(\d+)/\d+", url)
        assert match is not None, url
        assert match.group(1) == "redis" and match.group(2) == "6379"
        assert hub["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_needs_the_password_the_workers_use(compose: dict[str, Any]) -> None:
    redis_service = services(compose)["redis"]
    assert re.fullmatch(
        r"\$\{REDIS_PASSWORD:\?[^}]+\}", redis_service["environment"]["REDIS_PASSWORD"]
    )
    assert '--requirepass "$$REDIS_PASSWORD"' in " ".join(redis_service["command"])
    assert "REDISCLI_AUTH" in " ".join(redis_service["healthcheck"]["test"])


def test_nginx_upstream_lists_every_worker_at_its_address(compose: dict[str, Any]) -> None:
    subnet = ipaddress.ip_network(compose["networks"]["hubnet"]["ipam"]["config"][0]["subnet"])
    expected = []
    for name in HUBS:
        hub = services(compose)[name]
        address = ipaddress.ip_address(hub["networks"]["hubnet"]["ipv4_address"])
        assert address in subnet
        expected.append(f"{address}:{hub['environment']['HUB_PORT']}")
        assert hub["environment"]["HUB_PORT"] in {str(p) for p in hub["expose"]}
    assert sorted(upstream_servers()) == sorted(expected)


def test_nginx_mounts_the_repository_config_files(compose: dict[str, Any]) -> None:
    nginx = services(compose)["nginx"]
    assert str(nginx["image"]).startswith("nginx:")
    mounts: dict[PurePosixPath, Path] = {}
    for volume in nginx["volumes"]:
        source, target, *mode = volume.split(":")
        assert mode == ["ro"], volume
        host = (REPO_ROOT / source).resolve()
        assert host.exists(), f"{source} is mounted but not in the repository"
        mounts[PurePosixPath(target)] = host
    assert mounts[PurePosixPath("/etc/nginx/nginx.conf")] == NGINX_CONF

    def host_path(container: PurePosixPath) -> Path:
        for target, host in mounts.items():
            if container == target or target in container.parents:
                return host / container.relative_to(target)
        raise AssertionError(f"{container} is not mounted into the nginx container")

    # Every file nginx.conf includes, resolved as nginx does in the container, is mounted
    # from the same file the local cluster includes.
    includes = re.findall(r"^\s*include\s+(\S+);", NGINX_CONF.read_text(), re.M)
    assert includes
    for include in includes:
        in_container = PurePosixPath("/etc/nginx") / include
        assert host_path(in_container) == (NGINX_CONF.parent / include).resolve()
        assert host_path(in_container).is_file()
    command = nginx["command"]
    assert command[command.index("-c") + 1] == "/etc/nginx/nginx.conf"
    assert "-p" in command  # temp paths of the shared rules are relative to the prefix
    assert "daemon off;" in command
    listen = re.findall(r"^\s*listen\s+(\d+);", NGINX_CONF.read_text(), re.M)
    assert len(listen) == 1
    published = [str(p) for p in nginx["ports"]]
    assert len(published) == 1 and published[0].endswith(f":{listen[0]}")
    assert set(nginx["depends_on"]) == set(HUBS)


def test_workers_get_time_to_drain(compose: dict[str, Any]) -> None:
    for name in HUBS:
        hub = services(compose)[name]
        grace = re.fullmatch(r"(\d+)s", hub["stop_grace_period"])
        assert grace is not None
        # `hub serve` takes at most HUB_DRAIN_TIMEOUT + 5 s to exit after SIGTERM.
        assert int(grace.group(1)) > float(hub["environment"]["HUB_DRAIN_TIMEOUT"]) + 5
        assert hub["build"] == "."


def test_dockerfile_runs_hub_serve_as_a_non_root_user(compose: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (cmd,) = [args for word, args in instructions if word == "CMD"]
    assert json.loads(cmd) == ["hub", "serve"]  # exec form: SIGTERM reaches the hub
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert re.search(r"\bHUB_HOST=0\.0\.0\.0\b", env)
    port = re.search(r"\bHUB_PORT=(\d+)\b", env)
    assert port is not None
    assert ("EXPOSE", port.group(1)) in instructions
    assert services(compose)["hub1"]["environment"]["HUB_PORT"] == port.group(1)
    assert any(word == "RUN" and "pip install" in args for word, args in instructions)


def test_dockerfile_copies_what_exists_and_the_console_script_is_declared() -> None:
    for word, args in dockerfile_instructions():
        if word == "COPY":
            *sources, _target = args.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), (
                    f"Dockerfile copies {source}, which is missing"
                )
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hub"] == "hub.cli:main"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".env"} <= ignored
    copied = {args.split()[0] for word, args in dockerfile_instructions() if word == "COPY"}
    assert not copied & ignored
