"""`deploy bench`, `deploy calibrate`, `deploy cost`."""

from __future__ import annotations

from dataclasses import asdict

import click

from toolkit.api import bench as api
from toolkit.cli.output import AMOUNT, console, emit_json, json_option
from toolkit.cost import CostReport
from toolkit.errors import UsageError
from toolkit.units import format_bytes


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}"


@click.command()
@click.argument("name", required=False)
@click.option("--url", help="Benchmark any OpenAI-compatible server at this base URL instead.")
@click.option("--api-key-env", metavar="VAR", help="With --url: env variable holding the key.")
@click.option("--model", help="With --url: the model name to request.")
@click.option("--concurrency", default="1,4,16", show_default=True, help="Levels, comma-separated.")
@click.option("--prompt-tokens", type=int, default=512, show_default=True)
@click.option("--output-tokens", type=int, default=128, show_default=True)
@click.option("--duration", type=float, default=30.0, show_default=True, help="Seconds per level.")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds per request."
)
@click.option("--no-ignore-eos", is_flag=True, help="Let the model stop early (no ignore_eos).")
@click.option("--no-save", is_flag=True, help="Do not save the result under DEPLOY_HOME/bench.")
@json_option
def bench(
    name: str | None,
    url: str | None,
    api_key_env: str | None,
    model: str | None,
    concurrency: str,
    prompt_tokens: int,
    output_tokens: int,
    duration: float,
    timeout: float,
    no_ignore_eos: bool,
    no_save: bool,
    as_json: bool,
) -> None:
    """Measure a running server: TTFT, decode tok/s, throughput, latency percentiles.

    NAME is a run started with `deploy up`; or use --url URL --model M for any server.
    Prints the ratio of the measured decode rate to the plan's estimate, and warns when
    the machine was busy (load average above the cores, CPU steal) or the ratio is
    below 0.5: such a rate is not recorded for later plans.
    """
    opts = api.BenchOptions(
        concurrency=api.parse_concurrency(concurrency),
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        duration_s=duration,
        timeout_s=timeout,
        ignore_eos=not no_ignore_eos,
        save=not no_save,
    )
    if url:
        if name or not model:
            raise UsageError(
                "--url takes --model (and no run NAME)",
                hint="deploy bench --url http://host:8000/v1 --model M --api-key-env VAR",
            )
        result = api.bench_url(url, model, api_key_env, opts)
    elif name:
        result = api.bench_run(name, opts)
    else:
        raise UsageError("give a run NAME or --url", hint="deploy ps")
    if as_json:
        emit_json(result.to_dict())
        for warning in result.warnings:
            console(stderr=True).print(f"[yellow]warning: {warning}[/yellow]")
        return
    from rich.table import Table

    out = console()
    s = result.settings
    where = result.target.get("run") or result.target.get("url")
    out.print(
        f"[bold]{where}[/bold]  model {result.target.get('model')}  "
        f"prompt {s.measured_prompt_tokens or '~' + str(s.prompt_tokens)} tok, "
        f"output {s.output_tokens} tok, {s.duration_s:g} s per level"
        + (f"  ({result.engine} {result.engine_version})" if result.engine else "")
    )
    table = Table(
        "conc",
        "reqs",
        "err",
        "TTFT ms\np50/90/99",
        "tok/s/req\np50",
        "total\ntok/s",
        "latency s\np50/90/99",
        "predicted\ntok/s",
        "ratio",
        "engine\nlog tok/s",
        box=None,
    )
    for lv in result.levels:
        t, lat = lv.ttft_s, lv.latency_s
        pred = _f(lv.predicted_tok_s)
        eng = _f(lv.engine.decode_tok_s) if lv.engine else "—"
        table.add_row(
            str(lv.concurrency),
            str(lv.requests),
            f"[red]{lv.errors}[/red]" if lv.errors else "0",
            f"{_ms(t.p50)}/{_ms(t.p90)}/{_ms(t.p99)}",
            _f(lv.decode_tok_s.p50),
            _f(lv.throughput_tok_s),
            f"{_f(lat.p50, '{:.1f}')}/{_f(lat.p90, '{:.1f}')}/{_f(lat.p99, '{:.1f}')}",
            pred,
            _f(lv.ratio_to_plan, "{:.2f}x"),
            eng,
        )
    out.print(table)
    kinds = {f"{lv.concurrency}: {lv.predicted_kind}" for lv in result.levels if lv.predicted_kind}
    if kinds:
        out.print("predicted (from the run's plan) at concurrency " + ", ".join(sorted(kinds)))
    for lv in result.levels:
        for sample in lv.error_samples:
            out.print(f"[red]concurrency {lv.concurrency}: {sample}[/red]")
    if result.ratio_to_plan is not None:
        out.print(f"measured / plan estimate: {result.ratio_to_plan:.2f}x")
    if result.machine_load:
        out.print(_machine_line(result.machine_load))
    for note in s.notes:
        out.print(f"[yellow]note: {note}[/yellow]")
    for warning in result.warnings:
        out.print(f"[yellow]warning: {warning}[/yellow]")
    if result.path:
        out.print(f"saved: {result.path}")


def _machine_line(load: dict[str, object]) -> str:
    """ "machine: load 0.52 (1 min) on 2 cores, CPU steal 0.0 %" from MachineLoad.to_dict()."""
    avg, cores, steal = load.get("load_avg_1m"), load.get("cores"), load.get("steal_pct")
    text = "machine: load " + (f"{avg:.2f} (1 min)" if isinstance(avg, float) else "unknown")
    text += f" on {cores} cores" if cores else ""
    text += f", CPU steal {steal:.1f} %" if isinstance(steal, float) else ""
    return text + (f" ({load['note']})" if load.get("note") else "")


@click.command()
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List stored calibration records.")
@click.option("--here", is_flag=True, help="With --list: only this machine's records.")
@click.option(
    "--accept",
    is_flag=True,
    help="Record the run's bench decode rate even if the machine was busy or it is "
    "below half the plan's estimate.",
)
@json_option
def calibrate(name: str | None, list_: bool, here: bool, accept: bool, as_json: bool) -> None:
    """Record a running server's measured memory for later plans on this machine.

    Parses the engine's startup log (weights, KV cache, compute buffers per device; vLLM's
    KV tokens, max concurrency, CUDA graphs) and the server's resident memory (RSS), with
    the single-stream decode rate of the run's newest `deploy bench`. A rate measured on a
    busy machine, or below half the plan's estimate, is refused (exit 7) unless --accept.
    """
    from rich.table import Table

    if list_ or not name:
        if not list_:
            raise UsageError("give a run NAME, or --list", hint="deploy ps")
        stored = api.list_calibration(this_machine=here)
        if as_json:
            emit_json([{**asdict(s.record), "path": str(s.path)} for s in stored])
            return
        table = Table("id", "model", "engine", "ctx×conc", "hardware", "created", box=None)
        for s in stored:
            r = s.record
            table.add_row(
                r.id,
                r.model_key,
                f"{r.engine} {r.engine_version}",
                f"{r.ctx}×{r.concurrency}",
                r.hardware_key,
                r.created,
            )
        console().print(table)
        return
    done = api.calibrate_run(name, accept=accept)
    record = done.record
    if as_json:
        emit_json(
            {
                **asdict(record),
                "decode_from": done.decode_from,
                "accepted_despite": list(done.accepted_despite),
            }
        )
        return
    out = console()
    out.print(
        f"[bold]{record.id}[/bold]  {record.model_key}  {record.engine} {record.engine_version}"
        f"  ctx {record.ctx} × {record.concurrency}  kv {record.kv_dtype}"
    )
    table = Table("device", "weights", "KV cache", "compute", "process total", box=None)
    for d in record.devices:
        table.add_row(
            d.id,
            format_bytes(d.weights_bytes),
            format_bytes(d.kv_cache_bytes),
            format_bytes(d.compute_bytes),
            format_bytes(d.total_bytes),
        )
    out.print(table)
    if record.kv_tokens_capacity:
        out.print(f"KV cache holds {record.kv_tokens_capacity:,} tokens")
    if record.decode_tok_s is not None:
        out.print(f"decode {record.decode_tok_s:.1f} tok/s (from {done.decode_from})")
    for reason in done.accepted_despite:
        out.print(f"[yellow]recorded with --accept despite: {reason}[/yellow]")
    out.print(f"hardware {record.hardware_key}; source {record.source}")
    out.print("Later plans for this model on this machine use these measured terms.")


def _break_even_line(report: CostReport) -> str:
    """The break-even sentence; never a figure above what the machine serves in a day."""
    parity, most = report.api_parity_mtok_day, report.capacity_max_mtok_day
    if parity is None:
        return "  break-even: none (the API price is zero)"
    if report.break_even == "unreachable" and most is not None:
        cap = (
            f"this machine serves at most {most:,.1f} M tokens/day"
            if report.capacity_mtok_day is not None
            else f"at most {most:,.1f} M tokens/day, from output speed alone"
        )
        return (
            f"  break-even: unreachable ({cap})\n"
            f"  the API bill equals the machine's cost only at {parity:,.1f} M tokens/day"
        )
    line = f"  break-even: {parity:,.1f} M tokens/day"
    if report.break_even == "reachable" and most is not None:
        return line + f" (this machine serves at most {most:,.1f} M/day: reachable)"
    return line + " (capacity unknown: no prefill speed)"


@click.command()
@click.argument("model")
@click.option("--hw", help="Hardware spec or profile file (default: this machine).")
@click.option("--gpu-hour-usd", type=AMOUNT, help="Rental price per GPU-hour.")
@click.option("--power-w", type=AMOUNT, help="Power draw of the machine under load, watts.")
@click.option("--kwh-usd", type=AMOUNT, help="Electricity price per kWh.")
@click.option("--capex-usd", type=AMOUNT, help="Purchase price, amortised over --months.")
@click.option("--months", type=AMOUNT, help="Months to amortise --capex-usd over.")
@click.option("--vs", "vs", metavar="PRICE_ID", help="Compare with this price-table entry.")
@click.option(
    "--mix", default="3:1", show_default=True, help="Input:output tokens of your traffic."
)
@click.option("--decode-tok-s", type=AMOUNT, help="Use this aggregate output speed (tok/s).")
@click.option("--prefill-tok-s", type=AMOUNT, help="Use this prompt speed (tok/s).")
@click.option("--gpus", type=int, help="GPUs billed by --gpu-hour-usd (default: the plan's).")
@click.option(
    "--concurrency",
    type=int,
    help="Streams served at once: plan for N and use its aggregate decode (default: 1).",
)
@json_option
def cost(
    model: str,
    hw: str | None,
    gpu_hour_usd: float | None,
    power_w: float | None,
    kwh_usd: float | None,
    capex_usd: float | None,
    months: float | None,
    vs: str | None,
    mix: str,
    decode_tok_s: float | None,
    prefill_tok_s: float | None,
    gpus: int | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Self-hosting $ per million tokens against API prices, and the break-even volume.

    A break-even above what the machine can serve in a day is reported as unreachable.
    """
    from toolkit.cost import parse_mix

    report = api.cost(
        model,
        api.CostOptions(
            hw=hw,
            gpu_hour_usd=gpu_hour_usd,
            power_w=power_w,
            kwh_usd=kwh_usd,
            capex_usd=capex_usd,
            months=months,
            vs=vs,
            input_share=parse_mix(mix),
            decode_tok_s=decode_tok_s,
            prefill_tok_s=prefill_tok_s,
            gpus=gpus,
            concurrency=concurrency,
        ),
    )
    if as_json:
        emit_json(report.to_dict())
        return
    from rich.table import Table

    out = console()
    sp, p = report.speed, report.price
    out.print(f"[bold]{report.model}[/bold] on {hw or 'this machine'}")
    out.print(
        f"  speed ({sp.source}): {_f(sp.decode_tok_s)} tok/s output, "
        f"{_f(sp.prefill_tok_s)} tok/s input — {sp.basis}"
    )
    out.print(
        f"  hardware: ${report.hardware.hourly_usd:.4f}/h ({report.hardware.basis}) = "
        f"${report.daily_cost_usd:.2f}/day"
    )
    table = Table("$ per 1M tokens", "input", "output", f"mix {mix}", box=None)
    money = "${:.3f}"
    table.add_row(
        "self-hosted (full load)",
        _f(report.self_input_usd_mtok, money),
        _f(report.self_output_usd_mtok, money),
        _f(report.self_blended_usd_mtok, money),
    )
    est = " (estimate)" if p.estimate else ""
    table.add_row(
        f"API: {p.name}{est}",
        money.format(p.input),
        money.format(p.output),
        money.format(report.api_blended_usd_mtok),
    )
    out.print(table)
    out.print(_break_even_line(report))
    out.print(f"  price source: {p.source} {('(' + p.as_of + ')') if p.as_of else ''}")
    for note in report.notes:
        out.print(f"  [yellow]note: {note}[/yellow]")
