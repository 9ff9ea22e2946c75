"""docker-compose.yml, checked without Docker (this machine has no engine): it parses, and every
image, command, module and file it refers to exists and imports."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"redis", "partner", "worker", "flower", "producer"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command(service: dict) -> list[str]:
    cmd = service["command"]
    assert isinstance(cmd, list), "commands are exec-form lists, so no shell quoting is involved"
    return cmd


def test_compose_has_redis_worker_flower_producer_and_partner(services):
    """The five services the README relies on are there."""
    assert set(services) == EXPECTED


def test_redis_is_pinned_to_at_least_6_2_with_noeviction_aof_and_a_healthcheck(services):
    """Redis runs a pinned version >= 6.2, never evicts, appends to its AOF, persists /data to a named
    volume, and reports health for depends_on."""
    redis = services["redis"]
    match = re.fullmatch(r"redis:(\d+)\.(\d+)\.(\d+)(-[a-z0-9]+)?", redis["image"])
    assert match, f"pin an exact version, not {redis['image']!r}"
    assert tuple(int(p) for p in match.groups()[:2]) >= (6, 2)
    cmd = command(redis)
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_app_services_wait_for_a_healthy_redis_and_reach_it_by_service_name(services):
    """Every service of ours points REDIS_URL and PARTNER_URL at services that exist, and the ones
    that use Redis start only once it is healthy."""
    for name in EXPECTED - {"redis"}:
        env = services[name]["environment"]
        host = re.match(r"redis://([^:/]+)", env["REDIS_URL"]).group(1)
        assert host in services
        assert re.match(r"http://([^:/]+)", env["PARTNER_URL"]).group(1) in services
        if name != "partner":
            assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        for other in services[name].get("depends_on", {}):
            assert other in services


def test_build_context_and_every_file_the_dockerfile_copies_exist(services):
    """The image builds from this repository: the Dockerfile exists and each COPY source is here."""
    contexts = {services[name]["build"] for name in EXPECTED - {"redis"}}
    assert contexts == {"."}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.M)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_volumes_are_declared_or_exist(compose, services):
    """Named volumes are declared; bind mounts point at files in the repository."""
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), source
            else:
                assert source in compose["volumes"], source


def test_every_command_exists_imports_and_accepts_its_subcommand(services):
    """`celery -A MODULE SUB …` loads the app and knows SUB (flower comes from its plug-in);
    `python -m MODULE …` is importable and answers --help."""
    from celery.app.utils import find_app
    from celery.bin.celery import celery as celery_cli

    for name in EXPECTED - {"redis"}:
        cmd = command(services[name])
        if cmd[0] == "celery":
            assert cmd[1] == "-A"
            app = find_app(cmd[2])
            assert app.main, cmd
            help_run = subprocess.run([sys.executable, "-m", "celery", "-A", cmd[2], cmd[3], "--help"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert help_run.returncode == 0, help_run.stderr
            assert cmd[3] in celery_cli.commands or cmd[3] == "flower"
        else:
            assert cmd[:2] == ["python", "-m"], cmd
            assert importlib.util.find_spec(cmd[2]) is not None, cmd
            importlib.import_module(cmd[2])
            help_run = subprocess.run([sys.executable, "-m", cmd[2], "--help"], cwd=ROOT,
                                      capture_output=True, text=True, timeout=60)
            assert help_run.returncode == 0, help_run.stderr
            flags = [arg for arg in cmd[3:] if arg.startswith("--")]
            assert all(flag in help_run.stdout for flag in flags), (flags, help_run.stdout)


def test_worker_sends_events_and_flower_api_is_reachable_without_auth(services):
    """Flower shows AWAITING_OPERATOR only from events: the worker runs with -E, and Flower's API
    is enabled on its loopback-published port."""
    assert "-E" in command(services["worker"])
    flower = services["flower"]
    assert flower["environment"]["FLOWER_UNAUTHENTICATED_API"] == "true"
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    assert services["producer"]["restart"] == "no"
