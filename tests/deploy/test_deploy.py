"""deploy/: the files parse, and every command they run is a real superweights command with real options."""
import re
import shlex
from pathlib import Path

import pytest
import yaml

from cluster.cli import build_parser

DEPLOY = Path(__file__).parents[2] / "deploy"


def _docs(name):
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _check_command(line: str) -> None:
    argv = shlex.split(line)
    assert argv[0] == "superweights", line
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"not a valid superweights command: {line}")


def _commands(text: str) -> list[str]:
    """superweights command lines in a text (YAML scalars, shell lines, README code blocks)."""
    out = []
    for m in re.finditer(r"superweights (?:batch|submit|status|logs|query|publish|scan|import-reference|diff|protect|"
                         r"quantize-eval|catalog)"
                         r"(?:\\\n|[^\n`])*", text):
        line = m.group(0).replace("\\\n", " ").split("#")[0].split("&&")[0].strip()
        out.append(line)
    return out


def test_every_yaml_file_parses():
    kinds = {name: [d.get("kind") for d in _docs(name)] for name in
             ("raycluster.yaml", "rayjob.yaml", "cronjob.yaml", "cluster-aws.yaml")}
    assert kinds["raycluster.yaml"] == ["RayCluster"] and kinds["rayjob.yaml"] == ["RayJob"]
    assert "CronJob" in kinds["cronjob.yaml"]
    aws = _docs("cluster-aws.yaml")[0]
    assert aws["provider"]["type"] == "aws" and aws["available_node_types"]["gpu"]["max_workers"] >= 1


def test_raycluster_has_a_gpu_worker_group_and_mounts_the_model_list():
    rc = _docs("raycluster.yaml")[0]
    [group] = rc["spec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["configMap"]["name"] == "superweights-models"
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/config"


def test_rayjob_and_nightly_cronjob_run_a_real_batch_command():
    job = _docs("rayjob.yaml")[0]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == _docs("raycluster.yaml")[0]["metadata"]["name"]
    _check_command(job["spec"]["entrypoint"])
    assert "--catalog s3://" in job["spec"]["entrypoint"]
    docs = {d["kind"]: d for d in _docs("cronjob.yaml")}
    assert len(docs["CronJob"]["spec"]["schedule"].split()) == 5
    inner = yaml.safe_load(docs["ConfigMap"]["data"]["rayjob.yaml"])
    assert inner["kind"] == "RayJob"
    _check_command(inner["spec"]["entrypoint"])
    launch = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert launch["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert "create" in docs["Role"]["rules"][0]["verbs"] and docs["Role"]["rules"][0]["resources"] == ["rayjobs"]


def test_dockerfile_installs_the_cuda_torch_and_the_package():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.\d+-py311-cu\d+", text, re.M)
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu" in text
    for pkg in ("words", "scanner", "catalog", "cluster"):  # every package the install finds
        assert f"COPY --chown=ray:users {pkg} " in text


def test_readme_and_launcher_commands_are_real():
    lines = _commands((DEPLOY / "README.md").read_text()) + _commands((DEPLOY / "cluster-aws.yaml").read_text())
    assert len(lines) >= 8
    for line in lines:
        _check_command(line.replace("JOB", "raysubmit_x").replace("...", "x"))


def test_example_model_list_parses():
    from cluster.models import read

    assert len(read(DEPLOY / "models.txt")) == 5
