"""docker-compose.yml against the settings models and the local launcher.

`docker compose config` checks the file when the Compose plugin is installed; without
it the file is parsed here, interpolated with deploy/dev.env the way Compose does, and
validated against the Compose specification's JSON schema (vendored from
compose-spec/compose-spec@170098ba, schema/compose-spec.json, Apache-2.0). Each BMFL
container's environment — after deploy/entrypoint.sh has turned BMFL_*_FILE secrets into
BMFL_* variables — must validate into its service's settings model and name the same
variables that ``bmfl up`` builds from the same models (launcher.topology).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from launcher.deployer import DeployerSettings
from launcher.stack import PORTS, anvil_args
from launcher.topology import CLOUD, FIRST_EDGE, OPERATOR, Topology, edge_positions, settings_env
from chain.anvil import dev_key, find_anvil, free_port, rpc
from tooling import import_tool, requires_anvil
from cloud_aggregator.settings import CloudSettings
from edge_node.settings import EdgeSettings
from vehicle_client.settings import FleetSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
MODELS: dict[str, type[BaseSettings]] = {
    "edge_node": EdgeSettings, "cloud_aggregator": CloudSettings, "vehicle_client": FleetSettings,
    "launcher.deployer": DeployerSettings,
}  # fmt: skip
GLOBAL_VARIABLES = {"BMFL_DEVICE"}  # read by the core (README "Environment"), not by a settings model
EDGES = [f"edge-{i}" for i in range(5)]


def dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; quotes around a value are dropped."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip().strip("'\"")
    return pairs


DEV_ENV = dotenv(ROOT / "deploy" / "dev.env")
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def substitute(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        value, op = env.get(m["name"]), m["op"] or ""
        missing = value is None or (op.startswith(":") and value == "")
        if missing and op.endswith("?"):
            raise KeyError(f"{m['name']}: {m['arg']}")
        return m["arg"] if missing and op else value or ""

    return _VARIABLE.sub(substitute, node)


DEV = interpolate(COMPOSE, DEV_ENV)


def module_of(service: dict[str, Any]) -> str | None:
    command = service.get("command", [])
    return command[2] if command[:2] == ["python", "-m"] else None


def bmfl_services() -> list[str]:
    return [name for name, s in SERVICES.items() if module_of(s) in MODELS]


def container_env(name: str) -> dict[str, str]:
    """The service's variables as its process sees them: interpolated with dev.env, each
    BMFL_*_FILE replaced by BMFL_* holding the secret (what deploy/entrypoint.sh does)."""
    service = DEV["services"][name]
    targets = {}
    for secret in service.get("secrets", []):
        source = secret if isinstance(secret, str) else secret["source"]
        target = source if isinstance(secret, str) else secret.get("target", source)
        targets[f"/run/secrets/{target}"] = DEV_ENV[COMPOSE["secrets"][source]["environment"]]
    env = {}
    for key, value in service["environment"].items():
        if key.endswith("_FILE"):
            env[key.removesuffix("_FILE")] = targets[value]
        else:
            env[key] = str(value)
    return env


def settings_from(env: dict[str, str], model: type[BaseSettings], monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    for key in [k for k in os.environ if k.startswith("BMFL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return model()


def topology() -> Topology:
    return Topology(
        host="127.0.0.1", chain_port=PORTS["chain"], cloud_port=PORTS["cloud"],
        edge_ports=tuple(PORTS["edge"] + i for i in range(5)), chain_id=31337, deployments=Path("/tmp/deployments"),
        blob_store="/tmp/blobs", state_root=Path("/tmp/state"),
    )  # fmt: skip


LAUNCHER = {
    **{f"edge-{i}": topology().edge(i) for i in range(5)}, "cloud": topology().cloud(), "fleet": topology().fleet(50),
    "fleet-gpu": topology().fleet(50, seed=1), "deployer": topology().deployer(),
}  # fmt: skip
"""What `bmfl up` builds for each compose service."""


# ---------------------------------------------------------------- the file itself


@pytest.mark.skipif(
    shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no Docker Compose plugin (the schema test below checks the file instead)",
)
def test_docker_compose_config_accepts_the_file() -> None:
    for profiles in ([], ["--profile", "dev"], ["--profile", "dev", "--profile", "gpu"]):
        result = subprocess.run(
            ["docker", "compose", "--env-file", "deploy/dev.env", *profiles, "config", "--quiet"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("document", [COMPOSE, DEV], ids=["as written", "interpolated with dev.env"])
def test_the_file_follows_the_compose_specification(document: dict[str, Any]) -> None:
    jsonschema = import_tool("jsonschema")
    schema = json.loads((ROOT / "tests" / "vectors" / "compose-spec.json").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(document)]
    assert errors == []


def test_dev_env_gives_every_secret_and_every_variable_without_a_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= set(DEV_ENV)
    for secret in COMPOSE["secrets"].values():
        assert re.fullmatch(r"0x[0-9a-f]{64}", DEV_ENV[secret["environment"]])
    used = {s if isinstance(s, str) else s["source"] for svc in SERVICES.values() for s in svc.get("secrets", [])}
    assert used == set(COMPOSE["secrets"])


def test_topology_and_profiles() -> None:
    assert set(SERVICES) == {"anvil", "kubo", "deployer", *EDGES, "cloud", "fleet", "fleet-gpu"}
    assert {name for name, s in SERVICES.items() if "profiles" not in s} == {"kubo", *EDGES, "cloud"}
    assert {name for name, s in SERVICES.items() if s.get("profiles") == ["dev"]} == {"anvil", "deployer", "fleet"}
    assert SERVICES["fleet-gpu"]["profiles"] == ["gpu"]
    devices = SERVICES["fleet-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and DEV["services"]["fleet-gpu"]["environment"]["BMFL_DEVICE"] == "cuda"
    assert DEV["services"]["fleet-gpu"]["build"]["args"]["TORCH_VARIANT"].startswith("cu")


def test_official_images_are_pinned_and_ours_is_built_from_deploy() -> None:
    assert SERVICES["anvil"]["image"] == "ghcr.io/foundry-rs/foundry:v1.7.1"  # the Anvil npm package's version
    assert re.fullmatch(r"ipfs/kubo:v\d+\.\d+\.\d+", SERVICES["kubo"]["image"])
    for name in bmfl_services():
        assert SERVICES[name]["build"]["dockerfile"] == "deploy/Dockerfile" and (ROOT / "deploy" / "Dockerfile").is_file()


def test_every_service_command_exists() -> None:
    for name in bmfl_services():
        module = module_of(SERVICES[name])
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no module {module}"
        if spec.submodule_search_locations is not None:
            assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{name}: {module} has no __main__"
        else:
            assert 'if __name__ == "__main__":' in Path(spec.origin).read_text()
    checks = [s["healthcheck"]["test"] for s in SERVICES.values() if "healthcheck" in s]
    health = [t for t in checks if t[1:2] == ["python"]]
    assert health and all(t[2:4] == ["-m", "launcher.health"] for t in health)
    assert importlib.util.find_spec("launcher.health") is not None
    mounted = [v.split(":")[0] for v in SERVICES["kubo"]["volumes"] if v.startswith("./")]
    assert mounted and all((ROOT / m).is_file() for m in mounted)


def test_start_order_waits_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}, which has no health check"
            if rule["condition"] == "service_completed_successfully":
                assert SERVICES[target]["restart"] == "no"
            if "profiles" in SERVICES[target] and not set(SERVICES[target]["profiles"]) <= set(service.get("profiles", [])):
                assert rule.get("required") is False, f"{name} needs {target} outside its profile"
    assert set(SERVICES["cloud"]["depends_on"]) == set(EDGES)
    assert all(SERVICES[e]["depends_on"]["deployer"]["condition"] == "service_completed_successfully" for e in EDGES)


def test_published_ports_do_not_collide_and_reach_the_configured_ports() -> None:
    published: dict[int, str] = {}
    for name, service in DEV["services"].items():
        for mapping in service.get("ports", []):
            bind, host, container = mapping.split(":")
            assert bind == "127.0.0.1", f"{name} is published beyond loopback by default"
            assert int(host) not in published, f"{name} and {published.get(int(host))} both publish {host}"
            published[int(host)] = name
            env = service.get("environment") or _flags(service["command"])
            assert int(container) == int(next(v for k, v in env.items() if k.upper().endswith("PORT"))), name
    assert "ports" not in SERVICES["kubo"]
    assert published == {8545: "anvil", 8000: "cloud", **{8100 + i: f"edge-{i}" for i in range(5)}}


def test_secrets_come_from_the_environment_never_from_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"0x[0-9a-fA-F]{64}", text)
    for name in bmfl_services():
        env = SERVICES[name]["environment"]
        keys = [k for k in env if "KEY" in k]
        assert keys and all(k.endswith("_FILE") and env[k].startswith("/run/secrets/") for k in keys), name


# ---------------------------------------------------------------- against the settings models


@pytest.mark.parametrize("name", bmfl_services())
def test_every_variable_is_a_field_of_the_services_settings_model(name: str) -> None:
    model = MODELS[module_of(SERVICES[name])]
    prefix = model.model_config["env_prefix"]
    fields = {prefix + f.upper() for f in model.model_fields}
    names = set(container_env(name))
    assert names - GLOBAL_VARIABLES <= fields, f"{name} sets variables its model lacks: {names - GLOBAL_VARIABLES - fields}"
    required = {prefix + f.upper() for f, info in model.model_fields.items() if info.is_required()}
    assert required <= names, f"{name} leaves required settings unset: {required - names}"
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{v}`" in readme for v in names & GLOBAL_VARIABLES)


@pytest.mark.parametrize("name", bmfl_services())
def test_each_container_environment_validates_into_its_settings_model(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = MODELS[module_of(SERVICES[name])]
    settings = settings_from(container_env(name), model, monkeypatch)
    assert isinstance(settings, model)
    assert str(getattr(settings, "deployment", getattr(settings, "deployments", ""))).startswith("/var/lib/bmfl/deployments")


def test_dev_env_holds_anvils_development_accounts_in_the_launchers_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEV_ENV["BMFL_KEY_OPERATOR"] == dev_key(OPERATOR) and DEV_ENV["BMFL_KEY_CLOUD"] == dev_key(CLOUD)
    for i in range(5):
        assert container_env(f"edge-{i}")["BMFL_EDGE_PRIVATE_KEY"] == dev_key(FIRST_EDGE + i)
    deployer = settings_from(container_env("deployer"), DeployerSettings, monkeypatch)
    assert deployer.cloud == Account.from_key(dev_key(CLOUD)).address
    assert deployer.edges == [Account.from_key(container_env(e)["BMFL_EDGE_PRIVATE_KEY"]).address for e in EDGES]
    assert deployer.model_dump(include={"cloud", "edges"}) == LAUNCHER["deployer"].model_dump(include={"cloud", "edges"})


# ---------------------------------------------------------------- compose == `bmfl up`


@pytest.mark.parametrize("settings", list(LAUNCHER.values()), ids=list(LAUNCHER))
def test_settings_env_round_trips_through_the_environment(settings: BaseSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    again = settings_from(settings_env(settings), type(settings), monkeypatch)

    def plain(s: BaseSettings) -> dict[str, Any]:
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in dict(s).items()}

    assert plain(again) == plain(settings)


@pytest.mark.parametrize("name", list(LAUNCHER))
def test_compose_and_the_launcher_set_the_same_variables_of_the_same_model(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = LAUNCHER[name]
    compose = settings_from(container_env(name), MODELS[module_of(SERVICES[name])], monkeypatch)
    assert type(compose) is type(launcher)
    assert set(container_env(name)) - GLOBAL_VARIABLES == set(settings_env(launcher))
    assert compose.model_fields_set == launcher.model_fields_set


def test_compose_places_the_edges_where_the_launcher_does(monkeypatch: pytest.MonkeyPatch) -> None:
    for i, (x, y) in enumerate(edge_positions(5)):
        edge = settings_from(container_env(f"edge-{i}"), EdgeSettings, monkeypatch)
        assert math.isclose(edge.x, x, abs_tol=1e-3) and math.isclose(edge.y, y, abs_tol=1e-3)
    cloud = settings_from(container_env("cloud"), CloudSettings, monkeypatch)
    assert [e.url for e in cloud.edges] == [f"http://edge-{i}:8100" for i in range(5)]
    for endpoint, (x, y) in zip(cloud.edges, edge_positions(5)):
        assert math.isclose(endpoint.x, x, abs_tol=1e-3) and math.isclose(endpoint.y, y, abs_tol=1e-3)


def _flags(args: list[str]) -> dict[str, str]:
    pairs = [a.split("=", 1) for a in args] if all("=" in a for a in args) else [args[i : i + 2] for i in range(0, len(args), 2)]
    return {k: v for k, v in pairs}


def test_compose_runs_anvil_with_the_launchers_flags() -> None:
    local = anvil_args("0.0.0.0", 8545, 31337, 20, Path("/home/foundry/state.json"))
    assert _flags(DEV["services"]["anvil"]["command"]) == _flags(local)


def _anvil(command: list[str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(find_anvil()), *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            rpc(url, "eth_chainId", timeout=0.5)
            return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)


@requires_anvil
def test_anvil_accepts_the_compose_command_and_keeps_its_state_across_restarts(tmp_path: Path) -> None:
    """The npm Anvil is the release of the compose image (1.7.1); SIGINT is the stop signal."""
    assert SERVICES["anvil"]["stop_signal"] == "SIGINT"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        a.replace("0.0.0.0", "127.0.0.1").replace("8545", str(port)).replace("/home/foundry", str(tmp_path))
        for a in DEV["services"]["anvil"]["command"]
    ]  # fmt: skip
    for blocks in (0, 5):
        proc = _anvil(command, url)
        try:
            assert int(str(rpc(url, "eth_blockNumber")), 16) == blocks
            rpc(url, "anvil_mine", ["0x5"])
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
            if proc.stderr:
                proc.stderr.close()
        assert (tmp_path / "state.json").is_file()


# ---------------------------------------------------------------- operating limits


def _memory_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", str(text).lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_has_cpu_and_memory_limits_and_rotated_logs(name: str) -> None:
    service = DEV["services"][name]
    limits = service["deploy"]["resources"]["limits"]
    assert 0 < float(limits["cpus"]) <= 8 and 2**28 <= _memory_bytes(limits["memory"]) <= 2**35, limits
    logging = service["logging"]
    assert logging["driver"] == "json-file"
    assert _memory_bytes(logging["options"]["max-size"]) <= 100 * 2**20 and 1 <= int(logging["options"]["max-file"]) <= 10


def test_the_operators_key_goes_to_the_deployer_only_and_the_fleet_has_its_own_funded_key(monkeypatch: pytest.MonkeyPatch) -> None:
    holders = {name for name, s in SERVICES.items() for sec in s.get("secrets", []) if (sec if isinstance(sec, str) else sec["source"]) == "operator_key"}
    assert holders == {"deployer"}
    deployer = settings_from(container_env("deployer"), DeployerSettings, monkeypatch)
    for fleet in ("fleet", "fleet-gpu"):
        funder = Account.from_key(container_env(fleet)["BMFL_FLEET_FUNDER_KEY"]).address
        assert funder != Account.from_key(dev_key(OPERATOR)).address and funder in deployer.fund


def test_official_images_are_pinned_by_digest_or_their_pinning_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    section = operations[operations.index("## Pinning images") :]
    for name, service in SERVICES.items():
        if "build" in service:
            continue
        image = service["image"]
        pinned = re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image)
        assert pinned or f"`{image}`" in section, f"{name}: {image} is neither pinned by digest nor in docs/operations.md"
    assert "imagetools inspect" in section and "@sha256:" in section
