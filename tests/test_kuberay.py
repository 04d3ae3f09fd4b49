"""deploy/kuberay/: the RayCluster and RayJob validate against KubeRay's CRD schemas and hold no secret."""

from __future__ import annotations

import copy
import functools
import pathlib
import re
import typing

import jsonschema
import pytest
import yaml

from tests.test_cluster_yaml import _SECRET_PATTERNS

pytestmark = pytest.mark.timeout(120)

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBERAY = ROOT / "deploy" / "kuberay"
CRDS = KUBERAY / "crds"


def _strict(schema: typing.Any) -> typing.Any:
    """The schema with unknown fields refused.

    The API server prunes fields a structural schema does not name, silently: a misspelt field
    (``rayStartParam``) would be dropped, not refused. So the test refuses them wherever the schema
    lists properties and does not say to keep unknown fields.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _schema(kind: str) -> dict[str, typing.Any]:
    crd = yaml.safe_load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return typing.cast(dict[str, typing.Any], _strict(version["schema"]["openAPIV3Schema"]))


def _validate(document: dict[str, typing.Any]) -> None:
    assert document["apiVersion"] == "ray.io/v1"
    jsonschema.Draft4Validator(_schema(document["kind"])).validate(document)


def _load(name: str) -> dict[str, typing.Any]:
    data = yaml.safe_load((KUBERAY / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_raycluster_validates_against_kuberays_crd() -> None:
    cluster = _load("raycluster.yaml")
    assert cluster["kind"] == "RayCluster"
    _validate(cluster)
    spec = cluster["spec"]
    assert spec["authOptions"]["mode"] == "token", "Ray token authentication must be on"
    assert spec["rayVersion"].startswith("2.60")
    assert "shard_host" not in spec["headGroupSpec"].get("resources", {}), "the head must not run shards"
    (group,) = spec["workerGroupSpecs"]
    assert group["resources"] == {"shard_host": "1"}
    assert group["maxReplicas"] > group["minReplicas"] >= 1
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    assert env["DISCORD_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-shards-discord", "key": "token"}
    assert "value" not in env["DISCORD_TOKEN"]
    for worker in group["template"]["spec"]["containers"]:
        assert "DISCORD_TOKEN" not in {e["name"] for e in worker.get("env", [])}, "workers never need the token"
    gcs_ft = spec["gcsFaultToleranceOptions"]
    assert "valueFrom" in gcs_ft["redisPassword"] and "value" not in gcs_ft["redisPassword"]


def test_rayjob_validates_and_runs_ray_shards_on_the_cluster() -> None:
    job = _load("rayjob.yaml")
    assert job["kind"] == "RayJob"
    _validate(job)
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": _load("raycluster.yaml")["metadata"]["name"]}
    assert re.search(r"\bray-shards\b.* run\b.*--entrypoint \S+:\S+", spec["entrypoint"]), spec["entrypoint"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert not {"DISCORD_TOKEN", "RAY_SHARDS_TOKEN"} & set(runtime_env.get("env_vars", {}))


def test_the_validation_catches_mistakes() -> None:
    """The check is not vacuous: a misspelt field, a wrong type and a bad enum value are refused."""
    cluster = _load("raycluster.yaml")
    for path, value in [
        (("spec", "headGroupSpec", "rayStartParam"), {"num-cpus": "0"}),
        (("spec", "workerGroupSpecs", 0, "maxReplicas"), "eight"),
        (("spec", "authOptions", "mode"), "password"),
        (("spec", "workerGroupSpecs", 0, "resources", "shard_host"), 1),
    ]:
        broken = copy.deepcopy(cluster)
        target: typing.Any = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            _validate(broken)
    job = _load("rayjob.yaml")
    job["spec"]["entrypont"] = job["spec"].pop("entrypoint")
    with pytest.raises(jsonschema.ValidationError):
        _validate(job)


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml", "Dockerfile"])
def test_no_secret_in_the_files(name: str) -> None:
    text = (KUBERAY / name).read_text(encoding="utf-8")
    for pattern in _SECRET_PATTERNS:
        assert not pattern.search(text), f"{name} matches {pattern.pattern!r}"
    assert not re.search(r"(?i)(password|token)[ \t]*:[ \t]*['\"]?[A-Za-z0-9+/=_.-]{8,}", text), name
    for document in yaml.safe_load_all(text) if name.endswith(".yaml") else []:
        _no_literal_secret_env(document)


def _no_literal_secret_env(node: typing.Any) -> None:
    """No env var whose name says secret has a literal value (it must come from a Secret)."""
    if isinstance(node, dict):
        if {"name", "value"} <= node.keys() and re.search(r"(?i)token|password|secret", str(node["name"])):
            raise AssertionError(f"literal value for {node['name']}")
        for value in node.values():
            _no_literal_secret_env(value)
    elif isinstance(node, list):
        for value in node:
            _no_literal_secret_env(value)
