"""Kubernetes manifests for BMFL across machines (docs/operations.md, "Kubernetes").

The same topology as ``docker-compose.yml``: an IPFS node (Kubo), N edges each on a node
of its own (required pod anti-affinity), the cloud aggregator, and for development a
chain node (Anvil) and a vehicle fleet. Every BMFL container's variables are built from
the services' settings models, as ``bmfl up`` and compose build them, so the three agree
(``tests/test_deploy_k8s.py``). Keys are Kubernetes Secrets mounted as files and read
through ``BMFL_*_FILE`` by the image's entry point; none is in a manifest. The contracts'
deployment file is a ConfigMap (``bmfl-deployment``) that the operator creates once the
contracts are deployed. ``bmfl k8s`` writes the manifests; ``deploy/k8s/bmfl.yaml`` is
the committed rendering for five edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from cloud_aggregator.settings import CloudSettings, EdgeEndpoint
from edge_node.settings import EdgeSettings
from launcher.topology import edge_positions, settings_env

NAMESPACE = "bmfl"
IMAGE = "bmfl:cpu"
KUBO_IMAGE = "ipfs/kubo:v0.43.0"
ANVIL_IMAGE = "ghcr.io/foundry-rs/foundry:v1.7.1"
CHAIN_ID = 31337
EDGE_PORT, CLOUD_PORT, CHAIN_PORT = 8100, 8000, 8545
DEPLOYMENTS = Path("/var/lib/bmfl/deployments")
STATE = Path("/var/lib/bmfl/state")
SECRETS = Path("/run/secrets")
RPC_URL = f"http://anvil:{CHAIN_PORT}"
BLOB_STORE = "kubo:http://kubo:5001"
EDGE_URL = "http://edge-{i}:%d" % EDGE_PORT
KUBO_INIT = Path(__file__).resolve().parent.parent / "deploy" / "kubo" / "001-bmfl.sh"
RENDERED = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "bmfl.yaml"
BMFL_UID = 10001  # the image's user (deploy/Dockerfile)
PLACEHOLDER_KEY = SecretStr("0x" + "11" * 32)  # replaced by a *_FILE variable below

SERVICE = {"cpu": "1", "memory": "2Gi"}
SERVICE_LIMIT = {"cpu": "2", "memory": "4Gi"}
SMALL = {"cpu": "250m", "memory": "512Mi"}
SMALL_LIMIT = {"cpu": "1", "memory": "2Gi"}


def _labels(component: str, name: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "bmfl", "app.kubernetes.io/component": component, "app.kubernetes.io/name": name}


def _meta(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": _labels(component, name)}


def container_env(settings: BaseSettings, secret_files: dict[str, str]) -> list[dict[str, str]]:
    """The variables that reproduce ``settings`` (``launcher.topology.settings_env``), with
    each secret field named in ``secret_files`` replaced by ``<VAR>_FILE`` = that path."""
    env = settings_env(settings)
    for var, path in secret_files.items():
        env.pop(var)
        env[f"{var}_FILE"] = path
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _service(name: str, component: str, port: int, *ports: tuple[str, int]) -> dict[str, Any]:
    named = ports or (("http", port),)
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, component),
        "spec": {"selector": _labels(component, name), "ports": [{"name": n, "port": p, "targetPort": p} for n, p in named]},
    }  # fmt: skip


def _http_probe(port: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6}


def _stateful_set(
    name: str, component: str, pod: dict[str, Any], state_mount: str, storage: str = "1Gi"
) -> dict[str, Any]:
    """One replica with a persistent volume ``state`` mounted at ``state_mount``."""
    pod["containers"][0].setdefault("volumeMounts", []).append({"name": "state", "mountPath": state_mount})
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name, component),
        "spec": {
            "serviceName": name, "replicas": 1, "selector": {"matchLabels": _labels(component, name)},
            "template": {"metadata": {"labels": _labels(component, name)}, "spec": pod},
            "volumeClaimTemplates": [{
                "metadata": {"name": "state"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
            }],
        },
    }  # fmt: skip


def _bmfl_pod(module: str, env: list[dict[str, str]], port: int, secret: str, target: str) -> dict[str, Any]:
    """A BMFL service container: its key Secret mounted as ``/run/secrets/<target>``, the
    deployment ConfigMap read-only, probes on ``/healthz``, resource requests and limits."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": BMFL_UID, "runAsGroup": BMFL_UID, "fsGroup": BMFL_UID},
        "containers": [{
            "name": module.replace("_", "-"), "image": IMAGE, "command": ["/app/deploy/entrypoint.sh"],
            "args": ["python", "-m", module], "env": env, "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": _http_probe(port), "livenessProbe": {**_http_probe(port), "initialDelaySeconds": 30},
            "resources": {"requests": SERVICE, "limits": SERVICE_LIMIT},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                {"name": "key", "mountPath": str(SECRETS / target), "subPath": "key", "readOnly": True},
                {"name": "deployment", "mountPath": str(DEPLOYMENTS), "readOnly": True},
            ],
        }],
        "volumes": [
            {"name": "key", "secret": {"secretName": secret, "defaultMode": 0o400}},
            {"name": "deployment", "configMap": {"name": "bmfl-deployment"}},
        ],
    }  # fmt: skip


def edge(i: int, count: int) -> list[dict[str, Any]]:
    """Edge ``i``: its StatefulSet, on a node no other edge runs on, and its Service."""
    x, y = edge_positions(count)[i]
    settings = EdgeSettings(
        rpc_url=RPC_URL, deployment=DEPLOYMENTS / f"{CHAIN_ID}.json", private_key=PLACEHOLDER_KEY,
        blob_store=BLOB_STORE, state_dir=STATE, cloud_url=f"http://cloud:{CLOUD_PORT}", x=x, y=y,
        host="0.0.0.0", port=EDGE_PORT,
    )  # fmt: skip
    env = container_env(settings, {"BMFL_EDGE_PRIVATE_KEY": str(SECRETS / "edge_key")})
    pod = _bmfl_pod("edge_node", env, EDGE_PORT, f"bmfl-edge-{i}-key", "edge_key")
    pod["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "edge"}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}  # fmt: skip
    name = f"edge-{i}"
    return [_stateful_set(name, "edge", pod, str(STATE), "10Gi"), _service(name, "edge", EDGE_PORT)]


def cloud(count: int, edge_url: str = EDGE_URL) -> list[dict[str, Any]]:
    """The cloud: its StatefulSet and Service. ``edge_url`` ({i}: the edge's index) is the
    address it gives vehicles for each edge: the in-cluster Service unless vehicles reach
    the edges from outside (an Ingress or a LoadBalancer the operator adds)."""
    edges = [EdgeEndpoint(url=edge_url.format(i=i), x=x, y=y) for i, (x, y) in enumerate(edge_positions(count))]
    settings = CloudSettings(
        rpc_url=RPC_URL, deployment=DEPLOYMENTS / f"{CHAIN_ID}.json", private_key=PLACEHOLDER_KEY,
        blob_store=BLOB_STORE, state_dir=STATE, edges=edges, round_timeout_s=300.0, host="0.0.0.0", port=CLOUD_PORT,
    )  # fmt: skip
    env = container_env(settings, {"BMFL_CLOUD_PRIVATE_KEY": str(SECRETS / "cloud_key")})
    pod = _bmfl_pod("cloud_aggregator", env, CLOUD_PORT, "bmfl-cloud-key", "cloud_key")
    return [_stateful_set("cloud", "cloud", pod, str(STATE), "10Gi"), _service("cloud", "cloud", CLOUD_PORT)]


def kubo() -> list[dict[str, Any]]:
    """The IPFS node: RPC and gateway inside the cluster only, BMFL's init script."""
    probe = ["/bin/sh", "-c", "ipfs --api=/ip4/127.0.0.1/tcp/5001 dag stat /ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"]
    pod = {
        "containers": [{
            "name": "kubo", "image": KUBO_IMAGE,
            "ports": [{"name": "rpc", "containerPort": 5001}, {"name": "gateway", "containerPort": 8080}],
            "readinessProbe": {"exec": {"command": probe}, "periodSeconds": 5, "timeoutSeconds": 5},
            "resources": {"requests": SMALL, "limits": SMALL_LIMIT},
            "volumeMounts": [{"name": "init", "mountPath": "/container-init.d", "readOnly": True}],
        }],
        "volumes": [{"name": "init", "configMap": {"name": "bmfl-kubo-init", "defaultMode": 0o555}}],
    }  # fmt: skip
    init = {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("bmfl-kubo-init", "blob-store"),
        "data": {KUBO_INIT.name: KUBO_INIT.read_text()},
    }  # fmt: skip
    only_bmfl = {  # the RPC can pin and delete: only BMFL's own pods may reach the node
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta("kubo-ingress", "blob-store"),
        "spec": {
            "podSelector": {"matchLabels": _labels("blob-store", "kubo")}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "bmfl"}}}]}],
        },
    }  # fmt: skip
    return [init, _stateful_set("kubo", "blob-store", pod, "/data/ipfs", "50Gi"),
            _service("kubo", "blob-store", 5001, ("rpc", 5001), ("gateway", 8080)), only_bmfl]  # fmt: skip


def anvil() -> list[dict[str, Any]]:
    """A development chain (Anvil, state dumped every 10 s); point ``BMFL_*_RPC_URL`` at a
    real node instead in production."""
    args = [
        "--host=0.0.0.0", f"--port={CHAIN_PORT}", f"--chain-id={CHAIN_ID}", "--accounts=20", "--balance=10000",
        "--mnemonic=test test test test test test test test test test test junk",
        "--state=/home/foundry/state/state.json", "--state-interval=10",
    ]  # fmt: skip
    pod = {
        "containers": [{
            "name": "anvil", "image": ANVIL_IMAGE, "command": ["anvil"], "args": args,
            "ports": [{"name": "rpc", "containerPort": CHAIN_PORT}],
            "readinessProbe": {"tcpSocket": {"port": CHAIN_PORT}, "periodSeconds": 5},
            "resources": {"requests": SMALL, "limits": SMALL_LIMIT},
        }],
        "terminationGracePeriodSeconds": 30,
    }  # fmt: skip
    return [_stateful_set("anvil", "chain", pod, "/home/foundry/state"), _service("anvil", "chain", CHAIN_PORT)]


def manifests(edges: int = 5, chain: bool = True, edge_url: str = EDGE_URL) -> list[dict[str, Any]]:
    """Every object, in the order ``kubectl apply`` should create them."""
    if edges < 1:
        raise ValueError("need at least one edge")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "bmfl"}}}
    objects = [namespace, *kubo(), *(anvil() if chain else [])]
    for i in range(edges):
        objects += edge(i, edges)
    return objects + cloud(edges, edge_url)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Kubo init script) as literal blocks."""


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


def render(objects: list[dict[str, Any]]) -> str:
    header = "# Generated by `bmfl k8s` (launcher/k8s.py); edit the generator, not this file.\n"
    return header + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, explicit_start=True, allow_unicode=True)


def k8s(
    edges: int = typer.Option(5, "--edges", min=1, help="number of edges, each on its own node"),
    chain: bool = typer.Option(True, "--chain/--no-chain", help="include a development chain node (Anvil)"),
    edge_url: str = typer.Option(EDGE_URL, "--edge-url", help="each edge's address given to vehicles; {i}: its index"),
    out: Optional[Path] = typer.Option(None, "--out", help="file to write (default: standard output)"),
) -> None:
    """Kubernetes manifests for the cloud, N edges, Kubo and a chain node."""
    if "{i}" not in edge_url:
        typer.echo("error: --edge-url must contain {i}, the edge's index", err=True)
        raise typer.Exit(2)
    text = render(manifests(edges, chain, edge_url))
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {out}: apply with `kubectl apply -f {out}` after creating the Secrets and the deployment ConfigMap")
