"""Kubernetes manifests for a plan: what `deploy up` would run, as a Deployment.

`deploy k8s render plan.json` writes, for a plan on one node:

- a Secret with the API key (generated, or `--key-file`), mounted as a file for
  llama-server (`--api-key-file`) and given to vLLM as VLLM_API_KEY;
- a PersistentVolumeClaim for the model (the plan's download size + 10 %);
- a Deployment (one replica, `Recreate`): an init container that fetches the variant
  into the volume from the hub when it is not there (`--no-fetch` for an air gap: copy
  the files in yourself), and the engine container with the argv deploy's launcher renders
  for the plan (same context, parallelism, caches, serving flags), listening on 0.0.0.0
  inside the pod behind the key, offline, GPUs requested as `nvidia.com/gpu`;
  readiness = the engine's /health (200 once the model is loaded);
- a ClusterIP Service on port 8000.

Images are the engines' official ones (vLLM's tagged with the version the plan was made
for), or the same paths in a private registry (`registry=`, an air-gapped cluster's
mirror), or the user's own (`image=`). `pin_images` then replaces every tag with the
digest the registry holds for it now (`toolkit.registry`), so the cluster runs exactly
the image that was rendered for, not whatever the tag points at later.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError
from toolkit.planner.types import Plan
from toolkit.registry import mirror

#: Official images (vLLM's tag is the plan's version when the plan names one).
IMAGES = {
    "vllm": "vllm/vllm-openai:latest",
    "llamacpp": "ghcr.io/ggml-org/llama.cpp:server-cuda",
    "llamacpp-cpu": "ghcr.io/ggml-org/llama.cpp:server",
}
#: The engine binary inside each image.
BINARIES = {"vllm": "vllm", "llamacpp": "/app/llama-server"}
PORT = 8000
MODELS = Path("/models")
SECRETS = Path("/var/run/deploy")
_NAME = re.compile(r"[^a-z0-9-]+")


def k8s_name(text: str) -> str:
    """A DNS-1123 label from any text (lowercase, digits, '-', at most 63)."""
    name = _NAME.sub("-", text.lower()).strip("-")[:63].strip("-")
    if not name:
        raise UsageError(f"{text!r} gives no Kubernetes name", hint="--name my-model")
    return name


@dataclass(frozen=True)
class Rendered:
    name: str
    objects: tuple[dict[str, Any], ...]
    key: str


#: The run folder inside the pod (an emptyDir: engine caches, temp files); files deploy's
#: launcher writes for the engine (vLLM's key guard) are mounted from a ConfigMap below it.
RUN = Path("/var/lib/deploy")


def _argv(
    plan: Plan, model_dir: Path, key_file: Path
) -> tuple[list[str], dict[str, str], dict[str, dict[str, str]]]:
    """The engine's argv, environment and files (folder → name → text) for the plan,
    rendered by deploy's launchers for the binary inside the image, with RUN as its run
    folder."""
    from toolkit.engines.base import InstalledEngine, build_launch
    from toolkit.engines.serving import recipe_serving

    engine = "vllm" if plan.engine == "vllm" else "llamacpp"
    installed = InstalledEngine(
        name=engine,  # type: ignore[arg-type]
        path=Path(BINARIES[engine]),
        version="image",
        backend="CUDA",
        python=Path("python3") if engine == "vllm" else None,
    )
    launch = build_launch(
        plan,
        installed,
        model_path=model_dir,
        host="0.0.0.0",  # inside the pod; the Service fronts it and the key guards it
        port=PORT,
        api_key_file=key_file,
        run_dir=RUN,
        serving=recipe_serving(plan, engine),
        served_model_name=plan.model_id,
    )
    files: dict[str, dict[str, str]] = {}
    for path, text in launch.files.items():
        files.setdefault(str(path.parent), {})[path.name] = text
    # The device plugin picks the GPUs; TMPDIR is the run folder's own.
    env = {k: str(v) for k, v in launch.env.items() if k != "CUDA_VISIBLE_DEVICES"}
    return list(launch.argv), env, files


def render(
    plan: Plan,
    *,
    name: str | None = None,
    namespace: str | None = None,
    image: str | None = None,
    key: str,
    storage_class: str | None = None,
    fetch: bool = True,
    registry: str | None = None,
) -> Rendered:
    """Secret, PVC, Deployment and Service for a plan on one node."""
    gpu_devices = [d for d in plan.devices if not d.startswith("cpu")]
    nodes = sorted({d.split("/", 1)[0] for d in plan.devices if "/" in d})
    if len(nodes) > 1 and plan.engine != "vllm":
        raise UsageError(
            "a llama.cpp plan that spans nodes runs on rpc-server workers, not rendered",
            hint="render a vLLM cluster plan, or plan for one node (--hw)",
        )
    app = k8s_name(name or plan.variant_id)
    meta: dict[str, Any] = {"name": app, "labels": {"app.kubernetes.io/name": app,
                            "app.kubernetes.io/managed-by": "deploy"}}  # fmt: skip
    if namespace:
        meta["namespace"] = k8s_name(namespace)
    model_dir = MODELS / k8s_name(plan.variant_id)
    key_path = SECRETS / "api-key"
    if len(nodes) > 1:
        per_node = len([d for d in gpu_devices if d.startswith(nodes[0] + "/")])
        local = tuple(f"cuda:{i}" for i in range(per_node))
        from dataclasses import replace as _replace

        plan = _replace(plan, devices=local)
        gpu_devices = list(local)
    argv, env, files = _argv(plan, model_dir, key_path)
    if len(nodes) > 1:
        argv += ["--distributed-executor-backend", "ray"]
    engine = "vllm" if plan.engine == "vllm" else "llamacpp"
    llama_image = IMAGES["llamacpp-cpu" if not gpu_devices else "llamacpp"]
    vllm_image = vllm_image_for(plan)
    if registry is not None:  # a bad --registry fails here, before anything is asked
        llama_image, vllm_image = mirror(llama_image, registry), mirror(vllm_image, registry)
    if image is None:
        image = vllm_image if engine == "vllm" else llama_image
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if engine == "vllm":
        env_list.append(
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": f"{app}-key", "key": "api-key"}},
            }
        )
    size_gib = max(1, int((plan.download_bytes or plan.weights_bytes) * 1.1 / 2**30) + 1)
    pvc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {**meta, "name": f"{app}-models"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{size_gib}Gi"}},
        },
    }
    if storage_class:
        pvc["spec"]["storageClassName"] = storage_class
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**meta, "name": f"{app}-key"},
        "type": "Opaque",
        "stringData": {"api-key": key},
    }
    resources: dict[str, Any] = {}
    if gpu_devices:
        n = str(len(gpu_devices))
        resources = {"limits": {"nvidia.com/gpu": n}, "requests": {"nvidia.com/gpu": n}}
    mem = sum(d.total_bytes for d in plan.memory if d.id.startswith("cpu"))
    if mem:
        mib = int(mem / 2**20 * 1.2) + 512
        resources.setdefault("requests", {})["memory"] = f"{mib}Mi"
    command, args = [argv[0]], argv[1:]
    if engine == "llamacpp":
        # The GGUF's file name is known once it is in the volume: the first .gguf there
        # (the -00001-of- part of a split file sorts first).
        i = args.index("--model")
        args[i + 1] = "$GGUF"
        quoted = " ".join(shlex.quote(a) if a != "$GGUF" else '"$GGUF"' for a in args)
        command = ["sh", "-c"]
        args = [
            f"GGUF=$(ls {model_dir}/*.gguf {model_dir}/*/*.gguf 2>/dev/null | sort | head -1); "
            f'test -n "$GGUF" || {{ echo "no GGUF in {model_dir}" >&2; exit 1; }}; '
            f"exec {shlex.quote(argv[0])} {quoted}"
        ]
    container: dict[str, Any] = {
        "name": engine,
        "image": image,
        "command": command,
        "args": args,
        "env": env_list,
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/health", "port": PORT},
            "periodSeconds": 10,
            "failureThreshold": 180,  # 30 minutes to load a large model
        },
        "volumeMounts": [
            {"name": "models", "mountPath": str(MODELS), "readOnly": True},
            {"name": "api-key", "mountPath": str(SECRETS), "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "run", "mountPath": str(RUN)},
            *(
                {"name": f"files-{i}", "mountPath": folder, "readOnly": True}
                for i, folder in enumerate(files)
            ),
        ],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if resources:
        container["resources"] = resources
    init: list[dict[str, Any]] = []
    if fetch:
        repo = _repo(plan)
        init.append(
            {
                "name": "fetch-model",
                "image": vllm_image,
                "command": ["sh", "-c"],
                "args": [
                    f'test -n "$(ls -A {model_dir} 2>/dev/null)" || '
                    f"huggingface-cli download {repo} --local-dir {model_dir}"
                    + (f" --include '{_pattern(plan)}'" if _pattern(plan) else "")
                ],
                "volumeMounts": [{"name": "models", "mountPath": str(MODELS)}],
            }
        )
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": f"{app}-models"}},
            {"name": "api-key", "secret": {"secretName": f"{app}-key", "defaultMode": 0o400}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
            *([{"name": "deploy-files", "configMap": {"name": f"{app}-files"}}] if files else []),
        ],
    }
    if init:
        pod["initContainers"] = init
    labels = {"app.kubernetes.io/name": app}
    if len(nodes) > 1:
        return _leader_workers(
            app, meta, plan, len(nodes), container, pod, secret, files, key, image, model_dir
        )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one GPU set: never two engines at once
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
        },
    }
    objects: list[dict[str, Any]] = [secret, pvc]
    for i, data in enumerate(files.values()):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {**meta, "name": f"{app}-files-{i}"},
                "data": data,
            }
        )
    objects += [deployment, service]
    return Rendered(app, tuple(objects), key)


def _leader_workers(
    app: str,
    meta: dict[str, Any],
    plan: Plan,
    size: int,
    container: dict[str, Any],
    pod: dict[str, Any],
    secret: dict[str, Any],
    files: dict[str, dict[str, str]],
    key: str,
    image: str,
    model_dir: Path,
) -> Rendered:
    """vLLM over Ray on `size` nodes as a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1,
    kubernetes-sigs/lws v0.10.0; the layout of vLLM's docs/deployment/frameworks/lws.md):
    the leader starts the Ray head, waits until the group's workers joined, then starts
    vLLM with the plan's TP × PP on the Ray backend; each worker joins the head at
    $(LWS_LEADER_ADDRESS). Every pod holds the model (an emptyDir filled by the fetch
    container: a multi-node model is copied to every node)."""
    engine_cmd = " ".join(shlex.quote(a) for a in [*container["command"], *container["args"]])
    wait = (
        f"for i in $(seq 1 600); do n=$(ray status 2>/dev/null | grep -c ' node_'); "
        f'[ "$n" -ge {size} ] && break; sleep 1; done'
    )
    leader = {
        **container,
        "command": ["sh", "-c"],
        "args": [
            "ray start --head --port=6379 --dashboard-host=127.0.0.1 --disable-usage-stats"
            f" && {wait} && exec {engine_cmd}"
        ],
    }
    worker = {
        k: v for k, v in container.items() if k not in ("readinessProbe", "startupProbe", "ports")
    }
    worker = {
        **worker,
        "name": "ray-worker",
        "command": ["sh", "-c"],
        "args": ["ray start --address=$(LWS_LEADER_ADDRESS):6379 --block --disable-usage-stats"],
    }
    volumes = [v for v in pod["volumes"] if v["name"] != "models"]
    volumes.insert(0, {"name": "models", "emptyDir": {}})
    init = [
        {**c, "volumeMounts": [{"name": "models", "mountPath": str(MODELS)}]}
        for c in pod.get("initContainers", [])
    ]

    def template(role: str, main: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [main], "volumes": volumes}
        if init:
            spec["initContainers"] = init
        labels = {"app.kubernetes.io/name": app, "role": role}
        return {"metadata": {"labels": labels}, "spec": spec}

    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": template("leader", leader),
                "workerTemplate": template("worker", worker),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": app, "role": "leader"},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
        },
    }
    objects: list[dict[str, Any]] = [secret]
    for i, data in enumerate(files.values()):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {**meta, "name": f"{app}-files-{i}"},
                "data": data,
            }
        )
    objects += [lws, service]
    del plan, image, model_dir
    return Rendered(app, tuple(objects), key)


def vllm_image_for(plan: Plan) -> str:
    """vLLM's official image at the version the plan's memory was computed for (the argv
    rendered here is for that version too); `latest` when the plan names none."""
    version = plan.vllm.version if plan.vllm else None
    if version and re.fullmatch(r"\d+\.\d+(\.\d+)*", version):
        if version.count(".") == 1:
            version += ".0"
        return f"vllm/vllm-openai:v{version}"
    return IMAGES["vllm"]


def images(objects: tuple[dict[str, Any], ...]) -> list[str]:
    """Every container image the objects name, in order, once each."""
    seen: list[str] = []
    for c in _containers(objects):
        if c["image"] not in seen:
            seen.append(c["image"])
    return seen


def pin_images(
    objects: tuple[dict[str, Any], ...], resolve: Callable[[str], str]
) -> tuple[dict[str, Any], ...]:
    """The objects with every image replaced by `resolve(image)` (a digest-pinned ref);
    each distinct image is resolved once."""
    pinned = {ref: resolve(ref) for ref in images(objects)}
    for c in _containers(objects):
        c["image"] = pinned[c["image"]]
    return objects


def _containers(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for obj in objects:
        spec = obj.get("spec") or {}
        templates = [spec.get("template")]
        lws = spec.get("leaderWorkerTemplate")
        if lws:
            templates += [lws.get("leaderTemplate"), lws.get("workerTemplate")]
        for t in templates:
            pod = (t or {}).get("spec") or {}
            out += pod.get("initContainers", []) + pod.get("containers", [])
    return out


def _repo(plan: Plan) -> str:
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve

    try:
        resolved = resolve(catalog(), plan.variant_id)
    except Exception:  # a local file or folder plan: no hub repo to fetch from
        raise UsageError(
            f"{plan.variant_id} is not a recipe variant: there is nothing to fetch",
            hint="--no-fetch, and copy the model into the volume",
        ) from None
    entry = resolved.entries[0]
    for v in entry.model.variants:
        from toolkit.catalog import variant_id

        if variant_id(entry.model, v) == plan.variant_id and v.repo:
            return v.repo
    raise UsageError(f"{plan.variant_id} has no hub repo", hint="--no-fetch")


def _pattern(plan: Plan) -> str | None:
    """For a GGUF variant, only its quant's files (a GGUF repo holds every quant)."""
    if plan.format != "gguf":
        return None
    return f"*{plan.quant.upper()}*"


def dump(objects: tuple[dict[str, Any], ...]) -> str:
    """Multi-document YAML, without anchors (each object stands alone)."""
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(yaml.dump(o, Dumper=Plain, sort_keys=False) for o in objects)
