"""The Kubernetes manifests (launcher/k8s.py, deploy/k8s/bmfl.yaml), validated offline
against the Kubernetes API schemas (PyPI ``kubernetes-validate``) and against the
services' settings models and docker-compose.yml, which must agree on every variable."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from chain.anvil import dev_key
from cloud_aggregator.settings import CloudSettings
from edge_node.settings import EdgeSettings
from launcher.cli import app
from launcher.k8s import RENDERED, manifests, render
from test_deploy_compose import container_env as compose_env
from test_deploy_compose import settings_from
from tooling import import_tool

KUBERNETES = ("1.30.0", "1.37.0")  # the oldest release still in common support, and the newest schemas shipped
OBJECTS = manifests()


def _kinds(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _env(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(obj)["env"]}


def test_the_committed_rendering_is_fresh() -> None:
    assert RENDERED.read_text() == render(OBJECTS), "run `bmfl k8s --out deploy/k8s/bmfl.yaml`"
    assert list(yaml.safe_load_all(RENDERED.read_text())) == OBJECTS


@pytest.mark.parametrize("version", KUBERNETES)
def test_every_object_follows_the_kubernetes_api_schema(version: str) -> None:
    kv = import_tool("kubernetes_validate")
    for obj in OBJECTS:
        kv.validate(obj, version, strict=True)
    broken = copy.deepcopy(_kinds(OBJECTS, "StatefulSet")["edge-0"])
    _container(broken)["readinesProbe"] = _container(broken).pop("readinessProbe")  # a typo the API would drop
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, version, strict=True)


def test_the_topology_matches_compose() -> None:
    sets = _kinds(OBJECTS, "StatefulSet")
    assert set(sets) == {"kubo", "anvil", "cloud", *(f"edge-{i}" for i in range(5))}
    assert set(_kinds(OBJECTS, "Service")) == set(sets)
    compose = yaml.safe_load(open(RENDERED.parent.parent.parent / "docker-compose.yml"))["services"]
    assert _container(sets["kubo"])["image"] == compose["kubo"]["image"]
    assert _container(sets["anvil"])["image"] == compose["anvil"]["image"]
    policy = _kinds(OBJECTS, "NetworkPolicy")["kubo-ingress"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "kubo"


@pytest.mark.parametrize("name", [*(f"edge-{i}" for i in range(5)), "cloud"])
def test_each_service_sets_what_compose_sets_and_its_settings_model_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = _kinds(OBJECTS, "StatefulSet")[name]
    env = _env(obj)
    ours = {k.removesuffix("_FILE") for k in env}
    assert ours == set(compose_env(name)), "k8s and compose give the service different variables"
    key_var = next(k for k in env if k.endswith("_FILE"))
    mounted = {m["mountPath"]: m for m in _container(obj)["volumeMounts"]}
    assert env[key_var] in mounted and mounted[env[key_var]]["readOnly"]
    resolved = {k: v for k, v in env.items() if k != key_var} | {key_var.removesuffix("_FILE"): dev_key(3)}
    model = EdgeSettings if name.startswith("edge") else CloudSettings
    settings = settings_from(resolved, model, monkeypatch)
    assert str(settings.deployment) in {m + "/31337.json" for m in mounted}
    assert str(settings.state_dir) in mounted


def test_edges_run_on_nodes_of_their_own_with_keys_of_their_own() -> None:
    secrets = set()
    for i in range(5):
        pod = _kinds(OBJECTS, "StatefulSet")[f"edge-{i}"]["spec"]["template"]["spec"]
        rule = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert rule["topologyKey"] == "kubernetes.io/hostname"
        assert rule["labelSelector"]["matchLabels"] == {"app.kubernetes.io/component": "edge"}
        secrets.add(next(v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v))
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert len(secrets) == 5
    assert not re.search(r"0x[0-9a-fA-F]{64}", RENDERED.read_text())  # no key in any manifest


def test_every_container_has_limits_and_a_readiness_probe() -> None:
    for obj in _kinds(OBJECTS, "StatefulSet").values():
        container = _container(obj)
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), obj["metadata"]["name"]
        assert "readinessProbe" in container, obj["metadata"]["name"]


def test_the_command_renders_any_number_of_edges() -> None:
    result = CliRunner().invoke(app, ["k8s", "--edges", "3", "--no-chain", "--edge-url", "https://edge-{i}.example.org"])
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(result.output))
    sets = _kinds(objects, "StatefulSet")
    assert set(sets) == {"kubo", "cloud", "edge-0", "edge-1", "edge-2"}
    edges = yaml.safe_load(_env(sets["cloud"])["BMFL_CLOUD_EDGES"])
    assert [e["url"] for e in edges] == [f"https://edge-{i}.example.org" for i in range(3)]
    refused = CliRunner().invoke(app, ["k8s", "--edge-url", "https://edges.example.org"])
    assert refused.exit_code == 2 and "{i}" in refused.output
