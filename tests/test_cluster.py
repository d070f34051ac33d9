"""The cluster/ configs: Ray's own launcher validation, KubeRay's required fields, one Ray version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def ray_version() -> str:
    import ray

    return ray.__version__


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))  # the schema shipped inside the installed ray package
    assert config["docker"]["image"] == f"rayproject/ray:{ray_version()}-py311-gpu"
    assert "pip install -e /home/ray/asp_tune" in config["setup_commands"]
    assert config["file_mounts"]["/home/ray/asp_tune"] == "."  # the checked-out version
    workers = [t for n, t in config["available_node_types"].items() if n != config["head_node_type"]]
    assert workers and all(t["max_workers"] >= 1 for t in workers)


def test_the_validator_does_reject_a_broken_config():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["max_wrokers"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_carry_what_kuberay_requires(name):
    doc = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob") and doc["metadata"]["name"]
    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == ray_version()
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"]
    groups = spec["workerGroupSpecs"]
    assert groups and all(g["groupName"] and "rayStartParams" in g and g["template"]["spec"]["containers"]
                          for g in groups)
    for container in [c for g in [head, *groups] for c in g["template"]["spec"]["containers"]]:
        assert container["image"].endswith(f"-ray{ray_version()}")
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in groups for c in g["template"]["spec"]["containers"]]
    assert all(isinstance(n, int) and n >= 1 for n in gpus)
    if doc["kind"] == "RayJob":
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
        assert doc["spec"]["entrypoint"].startswith("asp-tune hpo --address auto")


def test_the_rayjob_entrypoint_parses_as_an_asp_tune_command():
    from asp_tune.cli import load_extensions, build_parser

    doc = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    load_extensions()
    args = build_parser().parse_args(doc["spec"]["entrypoint"].split()[1:])
    assert args.command == "hpo" and args.address == "auto" and args.max_failures == 3
    assert args.storage_path.startswith("s3://")


def test_the_image_builds_on_the_same_ray_version():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert base == f"rayproject/ray:{ray_version()}-py311-gpu"
    assert "pip install --no-cache-dir -e /home/ray/asp_tune" in dockerfile


def test_the_nodes_and_the_image_get_the_code_without_the_venv_or_results_and_the_tag_names_this_version():
    """``file_mounts: .`` and ``COPY .`` shipped the README's .venv (6.5 GB) and runs/ to every node and image."""
    import tomllib

    repo = CLUSTER.parent
    ignored = {line.strip().strip("/") for line in (repo / ".gitignore").read_text().splitlines()}
    assert {".venv", "runs"} <= ignored
    for name in ("aws.yaml", "gcp.yaml"):
        config = yaml.safe_load((CLUSTER / name).read_text())
        assert config["rsync_filter"] == [".gitignore"] and "**/.git/**" in config["rsync_exclude"]
    docker_ignored = {line.strip() for line in (repo / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs"} <= docker_ignored
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    files = [CLUSTER / "Dockerfile", CLUSTER / "README.md", *(CLUSTER / "kuberay").glob("*.yaml")]
    tags = {tag for f in files for tag in re.findall(r"asp-tune:([\w.]+)-ray([\w.]+)", f.read_text())}
    assert tags == {(version, ray_version())}
