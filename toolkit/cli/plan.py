"""`deploy plan MODEL` and `deploy estimate MODEL|PATH`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from toolkit.api import plan as api
from toolkit.cli.hw import hw_option
from toolkit.cli.output import console, emit_json, json_option
from toolkit.errors import UsageError
from toolkit.planner.types import Plan, PlanRequest, PlanResult
from toolkit.units import format_bytes

GiB = 1024**3


def settings_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The settings both commands accept; anything left out is searched."""
    options = [
        click.option("--ctx", type=int, help="Context per stream (default: min(native, 32768))."),
        click.option(
            "--concurrency",
            type=int,
            default=1,
            show_default=True,
            help="Streams served at once (llama.cpp slots).",
        ),
        click.option("--engine", type=click.Choice(["llamacpp", "vllm"])),
        click.option("--quant", help="Weight format or GGUF type: bf16, fp8, awq, q4_k_m …"),
        click.option("--variant", help="A variant id (qwen3-coder-30b-a3b:q4_k_m)."),
        click.option("--kv-dtype", type=click.Choice(["f16", "bf16", "fp8", "q8_0", "q4_0"])),
        click.option("--tp", type=int, help="vLLM tensor-parallel size."),
        click.option(
            "--pp",
            type=click.IntRange(1, 64),
            help="vLLM pipeline-parallel size (on a --cluster: one stage per node).",
        ),
        click.option(
            "--dp",
            type=int,
            help="vLLM data-parallel attention + expert parallel over N GPUs (MoE); 1 = TP only.",
        ),
        click.option(
            "--spec-tokens",
            type=click.IntRange(1, 16),
            help="vLLM: speculative decoding with the model's MTP layers, N tokens a step.",
        ),
        click.option(
            "--lora-rank",
            type=click.IntRange(1, 512),
            help="vLLM: serve LoRA adapters up to this rank (memory planned; --max-loras N).",
        ),
        click.option(
            "--max-loras",
            type=click.IntRange(1, 64),
            default=1,
            show_default=True,
            help="vLLM: adapters one batch may mix.",
        ),
        click.option(
            "--vllm-version",
            help="Plan vLLM memory as this version budgets it (default: installed, else newest).",
        ),
        click.option("--gpu-mem-util", type=float, help="vLLM gpu_memory_utilization."),
        click.option("--ngl", type=int, help="llama.cpp layers on GPU (-ngl)."),
        click.option(
            "--n-cpu-moe", type=int, help="llama.cpp: MoE layers whose experts stay in RAM."
        ),
        click.option(
            "--prefer",
            type=click.Choice(["quality", "speed", "context"]),
            default="quality",
            show_default=True,
        ),
        click.option(
            "--min-tok-s",
            type=float,
            help="Speed floor: slower plans rank after every usable one (default 10).",
        ),
        click.option(
            "--min-ctx",
            type=int,
            help="Context floor (default 8192, or the recipe's own, e.g. 32768 for coders).",
        ),
        click.option("--flash-attn", type=click.Choice(["on", "off", "auto"])),
        click.option("--ubatch", type=int, help="llama.cpp physical batch (default 512)."),
        hw_option,
        json_option,
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _request(kw: dict[str, Any]) -> PlanRequest:
    return PlanRequest(
        ctx=kw["ctx"],
        concurrency=kw["concurrency"],
        engine=kw["engine"],
        quant=kw["quant"],
        variant=kw["variant"],
        kv_dtype=kw["kv_dtype"],
        tp=kw["tp"],
        pp=kw["pp"],
        dp=kw["dp"],
        vllm_version=kw["vllm_version"],
        spec_tokens=kw["spec_tokens"],
        lora_rank=kw["lora_rank"],
        max_loras=kw["max_loras"],
        gpu_mem_util=kw["gpu_mem_util"],
        ngl=kw["ngl"],
        n_cpu_moe=kw["n_cpu_moe"],
        prefer=kw["prefer"],
        flash_attn=kw["flash_attn"],
        ubatch=kw["ubatch"],
        min_tok_s=kw["min_tok_s"],
        min_ctx=kw["min_ctx"],
    )


@click.command()
@click.argument("model", required=False)
@settings_options
@click.option("--all", "show_all", is_flag=True, help="Also list rejected options with reasons.")
@click.option(
    "--task",
    type=click.Choice(["code", "chat", "reason", "embed"]),
    help="Rank every recipe tagged for this task instead of one MODEL.",
)
@click.option(
    "-f",
    "--file",
    "stack_file",
    type=click.Path(path_type=Path),
    help="Plan a stack file (several models behind one endpoint) jointly.",
)
@click.option(
    "--cluster",
    help="Plan over several machines: '2x[8xh100,ram=2T],net=ib400' or a cluster file.",
)
def plan(
    model: str | None,
    hw_spec: str | None,
    as_json: bool,
    show_all: bool,
    task: str | None,
    stack_file: Path | None,
    cluster: str | None,
    **kw: Any,
) -> None:
    """Rank what fits MODEL on this machine (or --hw), how, and how fast.

    Example: deploy plan qwen3-coder --hw 1xrtx4090,ram=64G
    Example: deploy plan --task code   (the best coding model for this machine)
    Example: deploy plan -f deploy.yaml   (a stack, planned jointly)
    """
    if stack_file is not None:
        if model is not None or task is not None:
            raise UsageError("give MODEL, --task or -f FILE, not several")
        from toolkit.cli.stack import plan_file

        plan_file(stack_file, hw_spec, as_json)
        return
    result = api.make_plans(model, _request(kw), hw=hw_spec, task=task, cluster=cluster)
    if as_json:
        emit_json(result.to_dict())
    else:
        _render(result, hw_spec or cluster, show_all, cluster=cluster is not None)
    if not result.plans:
        raise api.does_not_fit(model or f"--task {task}", result)


def _memory(p: Plan) -> str:
    cells = []
    for d in p.memory:
        if d.total_bytes <= 0:
            continue
        free = "?" if d.free_bytes is None else f"{d.free_bytes / GiB:.1f}"
        cells.append(f"{d.id} {d.needed_bytes / GiB:.1f}/{free}G")
    return " ".join(cells)


def _placement(p: Plan) -> str:
    s: str = p.placement
    if p.llamacpp is not None:
        if p.llamacpp.n_cpu_moe:
            s += f" --n-cpu-moe {p.llamacpp.n_cpu_moe}"
        elif p.placement == "partial_offload":
            s += f" -ngl {p.llamacpp.n_gpu_layers}"
        return s
    assert p.vllm is not None
    if p.vllm.tensor_parallel > 1:
        s += f" TP{p.vllm.tensor_parallel}"
    if p.vllm.data_parallel > 1:
        s += f" DP{p.vllm.data_parallel}"
    if p.vllm.expert_parallel:
        s += "+EP"
    return s


def speed_text(p: Plan, unit: str = " tok/s") -> str:
    """`~120 tok/s (95–150)`, `120 tok/s measured`, or `? tok/s`."""
    s = p.speed
    if s.decode_tok_s is None:
        return f"?{unit}"
    if s.measured:
        return f"{s.decode_tok_s:.0f}{unit} measured"
    text = f"~{_n(s.decode_tok_s)}{unit}"
    if s.decode_low is not None and s.decode_high is not None:
        text += f" ({_n(s.decode_low)}–{_n(s.decode_high)})"
    return text


def _n(x: float) -> str:
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def download_text(p: Plan) -> str:
    text = format_bytes(p.download_bytes)
    if p.download_bytes is not None and p.download_estimated:
        text = f"~{text} est."
    return text


def _table(result: PlanResult) -> None:
    from rich.table import Table

    table = Table(
        "#",
        "variant",
        "engine",
        "placement",
        "ctx (max)",
        "memory used/free",
        "tok/s",
        "download",
        box=None,
    )
    for i, p in enumerate(result.plans, 1):
        table.add_row(
            str(i),
            p.variant_id + (f" ({p.label})" if p.label else ""),
            p.engine,
            _placement(p),
            f"{p.ctx:,} ({(p.max_ctx or 0):,})",
            _memory(p),
            speed_text(p, unit=""),
            download_text(p),
        )
    console().print(table)


def _render(
    result: PlanResult, hw_spec: str | None, show_all: bool, *, cluster: bool = False
) -> None:
    out = console()
    if result.plans and out.width >= 120:
        _table(result)
    for i, p in enumerate(result.plans, 1):
        label = f"  [yellow]{p.label}[/yellow]" if p.label else ""
        if out.width < 120:
            out.print(f"{i:>2}. [bold]{p.variant_id}[/bold]  {p.engine}  {_placement(p)}{label}")
            out.print(
                f"    ctx {p.ctx:,} (max {(p.max_ctx or 0):,}) · {_memory(p)} · "
                f"{speed_text(p)} · download {download_text(p)}",
                soft_wrap=True,
            )
            out.print(f"    {api.up_command(p)}", soft_wrap=True)
        else:
            out.print(f"{i:>2}  {api.up_command(p)}", soft_wrap=True)
        if p.rank_reason:
            out.print(f"    above #{i + 1}: {p.rank_reason}", soft_wrap=True)
    if result.plans:
        best = result.plans[0]
        out.print(f"best: #1 — kernel {best.kernel}; {best.speed.basis}", soft_wrap=True)
        for n in best.notes:
            out.print(f"  note: {n}", soft_wrap=True)
        if cluster:
            out.print(
                f"planned for the cluster {hw_spec}: run a vLLM plan that spans nodes with "
                f"`deploy cluster up MODEL --cluster '{hw_spec}' --address IP` on the first "
                "node (Ray), a llama.cpp one with `deploy rpc-worker` on the others and "
                "`deploy up MODEL --rpc …` (docs/cluster.md)",
                soft_wrap=True,
            )
        elif hw_spec:
            out.print(
                f"planned for {hw_spec}: on that machine run `deploy plan … --json > plan.json`"
                " then `deploy up --plan plan.json`",
                soft_wrap=True,
            )
    for r in result.unplanned:
        out.print(f"not planned: {r.variant_id}: {r.reason}", soft_wrap=True)
    if show_all and result.rejections:
        out.print("\nrejected:")
        for r in result.rejections:
            out.print(f"  {r.variant_id} ({r.engine}): {r.reason}", soft_wrap=True)
    elif result.rejections:
        out.print(f"({len(result.rejections)} options rejected; --all shows why)")


@click.command()
@click.argument("model")
@settings_options
def estimate(model: str, hw_spec: str | None, as_json: bool, **kw: Any) -> None:
    """Memory breakdown of one configuration of MODEL (a recipe, GGUF file or folder)."""
    doc = api.estimate(model, _request(kw), hw=hw_spec)
    if as_json:
        emit_json(doc)
    else:
        out = console()
        if not doc["fits"]:
            out.print(
                f"does not fit: needs {format_bytes(doc.get('needs_bytes'))}, "
                f"have {format_bytes(doc.get('have_bytes'))}"
            )
            for r in doc["reasons"][:10]:
                out.print(f"  {r}")
        else:
            out.print(
                f"{doc['variant_id']} on {doc['engine']} ({doc['placement']}), "
                f"ctx {doc['ctx']:,}, max ctx {doc['max_ctx']:,}"
            )
            for d in doc["devices"]:
                out.print(
                    f"  {d['id']}: weights {format_bytes(d['weights_bytes'])}, KV "
                    f"{format_bytes(d['kv_cache_bytes'])}, compute "
                    f"{format_bytes(d['compute_bytes'])}, overhead "
                    f"{format_bytes(d['overhead_bytes'])}"
                    + (f", caches {format_bytes(d['cache_bytes'])}" if d["cache_bytes"] else "")
                    + f" = {format_bytes(d['total_bytes'])}"
                    + (
                        f", {format_bytes(d['total_bytes'] - d['reclaimable_bytes'])} needed "
                        f"({format_bytes(d['reclaimable_bytes'])} are reclaimable file pages)"
                        if d["reclaimable_bytes"]
                        else ""
                    )
                    + f" of {format_bytes(d['capacity_bytes'])}"
                )
            out.print(f"  decode ~{doc['decode_tok_s']} tok/s per stream ({doc['speed_basis']})")
    if not doc["fits"]:
        raise click.exceptions.Exit(3)


@click.group(name="k8s")
def k8s_group() -> None:
    """Kubernetes manifests for a plan (docs/kubernetes.md)."""


@k8s_group.command(name="render")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--plan-index", type=click.IntRange(1, 10_000), help="Plan N of a plan answer.")
@click.option("--name", help="Object names (default: the variant id).")
@click.option("--namespace", help="Namespace for every object.")
@click.option("--image", help="Engine image instead of the official one (any registry).")
@click.option(
    "--registry",
    metavar="HOST[:PORT][/PATH]",
    help="Pull the official images from this mirror (an air-gapped cluster's registry).",
)
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="Replace each image tag with the digest the registry holds for it now.",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="API key for the Secret (default: a new one, printed to stderr once).",
)
@click.option("--storage-class", help="StorageClass of the model volume.")
@click.option("--no-fetch", is_flag=True, help="No init container: copy the model in yourself.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the manifests there (mode 0600: they hold the key) instead of stdout.",
)
def k8s_render(
    plan_file: Path,
    plan_index: int | None,
    name: str | None,
    namespace: str | None,
    image: str | None,
    registry: str | None,
    pin: bool,
    key_file: Path | None,
    storage_class: str | None,
    no_fetch: bool,
    output: Path | None,
) -> None:
    """Secret, PVC, Deployment and Service that run PLAN_FILE (`deploy plan --json`)."""
    import os

    from toolkit import k8s, keys
    from toolkit import registry as images
    from toolkit.api.runs import load_plan_file

    plan = load_plan_file(plan_file, plan_index)
    if image is not None:
        images.parse(image)  # a bad reference fails before anything is rendered
    key = keys.read_key(key_file) if key_file is not None else keys.new_key()
    rendered = k8s.render(plan, name=name, namespace=namespace, image=image, key=key,
                          storage_class=storage_class, fetch=not no_fetch,
                          registry=registry)  # fmt: skip
    objects = rendered.objects
    if pin:
        objects = k8s.pin_images(objects, images.pin)
    else:
        tags = [i for i in k8s.images(objects) if "@" not in i]
        if tags:
            click.echo(f"note: images by tag, not digest: {', '.join(tags)}", err=True)
    text = k8s.dump(objects)
    if output is None:
        click.echo(text, nl=False)
    else:
        tmp = output.with_name(f".{output.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.replace(output)
        click.echo(f"wrote {output} (kubectl apply -f {output})", err=True)
    if key_file is None:
        click.echo(f"API key (in the Secret {rendered.name}-key): {key}", err=True)
