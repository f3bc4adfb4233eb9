"""`deploy k8s render`: manifests for a plan, validated against the Kubernetes schemas
shipped by `kubernetes-validate` (strict: no unknown fields), golden-tested, and honest
about what it cannot render.

Regenerate the golden files: DEPLOY_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_k8s.py
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.clihelp import run
from toolkit.api.plan import make_plans

GOLDEN = Path(__file__).parent / "golden" / "k8s"
KUBERNETES = "1.30.0"
KEY = "sk-deploy-golden-key-not-a-secret-000000"
CASES = {
    "qwen3-coder-30b-a3b-fp8--1xh100": ("qwen3-coder-30b-a3b:fp8", "1xh100,ram=256G"),
    "qwen3-coder-30b-a3b-q4_k_m--1xrtx4090": ("qwen3-coder-30b-a3b:q4_k_m", "1xrtx4090,ram=64G"),
    "qwen3-coder-480b-fp8--8xh200": ("qwen3-coder-480b-a35b:fp8", "8xh200,ram=2T"),
}


def _plan_file(tmp_path: Path, model: str, hw: str) -> Path:
    result = make_plans(model, hw=hw, calibration=[])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(result.to_dict()))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_validate_and_match_golden(case: str, tmp_path: Path) -> None:
    import kubernetes_validate

    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    plan = _plan_file(tmp_path, *CASES[case])
    res = run("k8s", "render", str(plan), "--key-file", str(key), "--no-pin")
    assert res.exit_code == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    kinds = [d["kind"] for d in docs]
    assert {"Secret", "PersistentVolumeClaim", "Deployment", "Service"} <= set(kinds)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("DEPLOY_UPDATE_GOLDEN"):
        golden.write_text(res.stdout)
    assert res.stdout == golden.read_text(), "manifests changed: regenerate and review"


def test_the_engine_runs_the_plan_behind_the_key(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path, *CASES["qwen3-coder-480b-fp8--8xh200"])
    out = tmp_path / "m.yaml"
    res = run("k8s", "render", str(plan), "-o", str(out), "--no-pin")
    assert res.exit_code == 0, res.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the key
    key = res.stderr.split("API key")[1].split(": ", 1)[1].strip()
    docs = {d["kind"]: d for d in yaml.safe_load_all(out.read_text())}
    assert docs["Secret"]["stringData"]["api-key"] == key
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (engine,) = pod["containers"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert engine["args"][engine["args"].index("--tensor-parallel-size") + 1] == "8"
    env = {e["name"]: e for e in engine["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "api-key"
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and "CUDA_VISIBLE_DEVICES" not in env
    assert key not in json.dumps(pod)  # the key only in the Secret
    assert pod["initContainers"][0]["name"] == "fetch-model"
    assert docs["Service"]["spec"]["type"] == "ClusterIP"


def test_multi_node_vllm_is_a_leader_worker_set(tmp_path: Path) -> None:
    """DeepSeek-R1 on 2 nodes of 8 H100s: a LeaderWorkerSet of 2 (the Ray head in the
    leader, a Ray worker in the other pod), vLLM with TP 8 × PP 2 on the Ray backend.
    The LWS object is checked against what the CRD of kubernetes-sigs/lws v0.10.0
    (config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml) requires:
    spec.leaderWorkerTemplate, its workerTemplate, containers in each pod spec, an int
    size ≥ 1 and a known restartPolicy; each pod template is validated as a Pod."""
    import kubernetes_validate

    cluster = make_plans("deepseek-r1", cluster="2x[8xh100,ram=2T],net=ib400")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cluster.to_dict()))
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    res = run("k8s", "render", str(path), "--key-file", str(key), "--no-pin")
    assert res.exit_code == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    lws = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2 and tmpl["restartPolicy"] in (
        "RecreateGroupOnPodRestart",
        "RecreateGroupAfterStart",
        "None",
    )
    for role in ("leaderTemplate", "workerTemplate"):
        spec = tmpl[role]["spec"]
        assert spec["containers"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    leader = " ".join(tmpl["leaderTemplate"]["spec"]["containers"][0]["args"])
    assert "ray start --head" in leader and "--distributed-executor-backend ray" in leader
    assert "--tensor-parallel-size 8" in leader and "--pipeline-parallel-size 2" in leader
    worker = " ".join(tmpl["workerTemplate"]["spec"]["containers"][0]["args"])
    assert "--address=$(LWS_LEADER_ADDRESS):6379" in worker
    for doc in docs:
        if doc["kind"] != "LeaderWorkerSet":
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    golden = GOLDEN / "deepseek-r1--2x8xh100.yaml"
    if os.environ.get("DEPLOY_UPDATE_GOLDEN"):
        golden.write_text(res.stdout)
    assert res.stdout == golden.read_text()


def test_what_it_cannot_render(tmp_path: Path, smollm2_gguf: Path) -> None:
    rpc = make_plans("llama-3.3-70b", cluster="4x[1xrtx4090,ram=64G],net=eth10")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(rpc.to_dict()))
    res = run("k8s", "render", str(path), "--no-pin")
    assert res.exit_code == 2 and "rpc-server" in res.stderr
    local = make_plans(str(smollm2_gguf), hw="1xrtx4090,ram=64G", calibration=[])
    path.write_text(json.dumps(local.to_dict()))
    res = run("k8s", "render", str(path), "--no-pin")
    assert res.exit_code == 2 and "--no-fetch" in res.stderr
    assert run("k8s", "render", str(path), "--no-fetch", "--no-pin").exit_code == 0


def test_images_are_pinned_to_the_digest_the_registry_holds(tmp_path: Path) -> None:
    """`--registry` points the official image paths at a mirror; pinning asks that
    registry (anonymous bearer token from the realm its 401 names, like Docker Hub and
    ghcr.io) which digest each tag holds, and writes `tag@digest`."""
    import kubernetes_validate

    from tests.registryserver import serve

    with serve() as reg:
        vllm = reg.push("vllm/vllm-openai", "v0.34.0")
        llama = reg.push("ggml-org/llama.cpp", "server-cuda")
        latest = reg.push("vllm/vllm-openai", "latest")  # the fetch step of a GGUF plan
        plan = _plan_file(tmp_path, *CASES["qwen3-coder-30b-a3b-fp8--1xh100"])
        res = run("k8s", "render", str(plan), "--registry", reg.host)
        assert res.exit_code == 0, res.stderr
        docs = list(yaml.safe_load_all(res.stdout))
        for doc in docs:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        want = f"{reg.host}/vllm/vllm-openai:v0.34.0@{vllm}"
        assert pod["containers"][0]["image"] == want
        assert pod["initContainers"][0]["image"] == want
        # One token request, then the manifest with that token; nothing unauthenticated
        # reached a manifest twice.
        assert [r[1] for r in reg.requests].count("/token") == 1
        assert reg.requests[-1][2] and reg.requests[-1][2].startswith("Bearer ")

        # A registry that leaves the digest header out of HEAD: the manifest is hashed.
        reg.omit_digest_header = True
        plan = _plan_file(tmp_path, *CASES["qwen3-coder-30b-a3b-q4_k_m--1xrtx4090"])
        res = run("k8s", "render", str(plan), "--registry", reg.host)
        assert res.exit_code == 0, res.stderr
        pod = next(d for d in yaml.safe_load_all(res.stdout) if d["kind"] == "Deployment")
        spec = pod["spec"]["template"]["spec"]
        assert (
            spec["containers"][0]["image"] == f"{reg.host}/ggml-org/llama.cpp:server-cuda@{llama}"
        )
        assert spec["initContainers"][0]["image"] == f"{reg.host}/vllm/vllm-openai:latest@{latest}"


def test_a_tag_the_registry_lacks_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    from tests.registryserver import serve

    plan = _plan_file(tmp_path, *CASES["qwen3-coder-30b-a3b-fp8--1xh100"])
    out = tmp_path / "m.yaml"
    with serve() as reg:
        res = run("k8s", "render", str(plan), "--registry", reg.host, "-o", str(out))
    assert res.exit_code == 2
    assert "has no vllm/vllm-openai:v0.34.0" in res.stderr and "--no-pin" in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".m.yaml*"))
    # Nothing listens there: the same one-line answer, not a traceback.
    res = run("k8s", "render", str(plan), "--registry", "127.0.0.1:9", "-o", str(out))
    assert res.exit_code == 2 and "cannot pin" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_an_image_given_by_digest_is_used_as_it_is(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path, *CASES["qwen3-coder-30b-a3b-q4_k_m--1xrtx4090"])
    digest = "sha256:" + "ab" * 32
    image = f"registry.example.internal:5000/llama.cpp:server-cuda@{digest}"
    res = run("k8s", "render", str(plan), "--image", image, "--no-fetch")
    assert res.exit_code == 0, res.stderr  # no registry was asked: nothing listens there
    pod = next(d for d in yaml.safe_load_all(res.stdout) if d["kind"] == "Deployment")
    assert pod["spec"]["template"]["spec"]["containers"][0]["image"] == image
    res = run("k8s", "render", str(plan), "--image", "vllm@sha256:short", "--no-fetch")
    assert res.exit_code == 2 and "64 hex digits" in res.stderr


@pytest.mark.parametrize(
    ("ref", "host", "repo", "tag", "api"),
    [
        ("vllm/vllm-openai:v0.34.0", "", "vllm/vllm-openai", "v0.34.0", "registry-1.docker.io"),
        ("ubuntu", "", "ubuntu", "latest", "registry-1.docker.io"),
        ("ghcr.io/ggml-org/llama.cpp:server", "ghcr.io", "ggml-org/llama.cpp", "server", "ghcr.io"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest", "localhost:5000"),
    ],
)
def test_image_references_are_read_as_registries_read_them(
    ref: str, host: str, repo: str, tag: str, api: str
) -> None:
    from toolkit import registry

    r = registry.parse(ref)
    assert (r.host, r.repo, r.tag, r.api_host) == (host, repo, tag, api)
    assert registry.parse("ubuntu").api_repo == "library/ubuntu"
    assert registry.mirror(ref, "mirror.local:5000/base").startswith("mirror.local:5000/base/")


@pytest.mark.parametrize("registry", ["", "a b", "https://mirror.local", "mirror:5000/UP", "-x"])
def test_a_bad_registry_is_refused_before_anything_is_asked(tmp_path: Path, registry: str) -> None:
    plan = _plan_file(tmp_path, *CASES["qwen3-coder-30b-a3b-fp8--1xh100"])
    out = tmp_path / "m.yaml"
    res = run("k8s", "render", str(plan), "--registry", registry, "-o", str(out))
    assert res.exit_code == 2 and "--registry" in res.stderr and "host[:port]" in res.stderr
    assert not out.exists()
