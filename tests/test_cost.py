"""deploy cost: $ per Mtok self-hosted vs API prices, break-even volume.

The arithmetic is checked on fixed, explicit inputs (numbers worked out by hand in the
comments), so the planner's changing estimates cannot move these tests; one test goes
through the real planner and checks the report is consistent with the plan it used.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.clihelp import run
from toolkit import cost
from toolkit.errors import NotFound, RecipeError, UsageError


def _prices() -> list[cost.Price]:
    return cost.load_prices()


def test_shipped_table_has_the_seed_prices_marked_as_estimates() -> None:
    table = {p.id: p for p in _prices()}
    seeds = {
        "gpt-4.1": (2.00, 8.00),
        "qwen3-coder": (0.20, 0.60),
        "deepseek-article-r2": (0.30, 1.20),
        "minimax-m2.5": (0.15, 0.60),
    }
    for pid, (pin, pout) in seeds.items():
        p = table[pid]
        assert (p.input, p.output) == (pin, pout)
        assert p.estimate and p.as_of == "2026-02" and p.source
    # "DeepSeek R2" has no weights: the article's price is matched to no model.
    assert table["deepseek-article-r2"].models == ()
    assert "R2" in table["deepseek-article-r2"].note
    assert all(p.source for p in table.values())


def test_shipped_table_is_package_data() -> None:
    path = cost.shipped_prices_file()
    assert path.parts[-3:] == ("toolkit", "data", "prices.yaml")


def test_price_lookup_by_model_then_family() -> None:
    prices = _prices()
    p = cost.price_for_model(prices, "qwen3-coder-30b-a3b", "qwen3-coder")
    assert p is not None and p.id == "qwen3-coder"
    assert cost.price_for_model(prices, "smollm2-135m", "smollm2") is None
    assert cost.price_by_id(prices, "GPT-4.1").id == "gpt-4.1"
    with pytest.raises(NotFound):
        cost.price_by_id(prices, "gpt-9")


def test_user_price_file_overrides_and_extends(isolated_env: Path) -> None:
    cfg = isolated_env / "config"
    cfg.mkdir(parents=True)
    (cfg / "prices.yaml").write_text(
        "schema: 1\nprices:\n"
        "  - {id: qwen3-coder, name: My Qwen host, input: 0.10, output: 0.30, "
        "models: [qwen3-coder-30b-a3b], source: my invoice}\n"
        "  - {id: local-llm, name: Other, input: 1, output: 2}\n"
    )
    table = {p.id: p for p in cost.load_prices()}
    assert table["qwen3-coder"].input == 0.10 and table["qwen3-coder"].name == "My Qwen host"
    assert table["local-llm"].output == 2.0
    assert table["gpt-4.1"].input == 2.0  # the rest of the shipped table stays


def test_broken_user_price_file_names_file_and_key(isolated_env: Path) -> None:
    cfg = isolated_env / "config"
    cfg.mkdir(parents=True)
    (cfg / "prices.yaml").write_text("prices:\n  - {id: x, name: X, input: cheap, output: 1}\n")
    with pytest.raises(RecipeError, match=r"prices\.yaml: prices\[0\]"):
        cost.load_prices()
    res = run("cost", "qwen3-coder-30b", "--gpu-hour-usd", "1", "--decode-tok-s", "10")
    assert res.exit_code == 2 and "prices.yaml" in res.stderr


def test_hardware_cost_rental_and_power() -> None:
    rent = cost.hardware_cost(gpu_hour_usd=0.40, gpus=2)
    assert rent.hourly_usd == pytest.approx(0.80)
    # 450 W x $0.30/kWh = $0.135/h; $1800 over 36 months of 730.5 h = $0.068446/h.
    own = cost.hardware_cost(power_w=450, kwh_usd=0.30, capex_usd=1800, months=36)
    assert own.hourly_usd == pytest.approx(0.135 + 1800 / (36 * 730.5))
    with pytest.raises(UsageError):
        cost.hardware_cost(gpu_hour_usd=1, power_w=100, kwh_usd=0.1)
    with pytest.raises(UsageError):
        cost.hardware_cost()
    with pytest.raises(UsageError):
        cost.hardware_cost(power_w=100, kwh_usd=0.1, capex_usd=1000)


def test_mix() -> None:
    assert cost.parse_mix("3:1") == 0.75
    assert cost.parse_mix("0:1") == 0.0
    with pytest.raises(UsageError):
        cost.parse_mix("three")


def test_qwen3_coder_30b_on_one_rtx4090_fixed_inputs() -> None:
    """Qwen3-Coder-30B on 1xrtx4090 rented at $0.40/GPU-hour, serving 120 output tok/s
    (all streams) and reading prompts at 2,500 tok/s, traffic 3:1 input:output:

    output  $0.40 / (120 x 3600) x 1e6   = $0.9259 per Mtok
    input   $0.40 / (2500 x 3600) x 1e6  = $0.0444 per Mtok
    1 Mtok of the mix takes 0.75e6/2500 + 0.25e6/120 = 300 + 2083.33 = 2383.33 s
    capacity 86400 / 2383.33 = 36.25 Mtok/day; blended self cost $0.2648/Mtok
    API (qwen3-coder, $0.20/$0.60): 0.75 x 0.20 + 0.25 x 0.60 = $0.30/Mtok
    machine: 24 x $0.40 = $9.60/day; break-even 9.60 / 0.30 = 32.0 Mtok/day (reachable)
    """
    price = cost.price_by_id(_prices(), "qwen3-coder")
    report = cost.cost_report(
        "qwen3-coder-30b-a3b",
        cost.Speed(120.0, 2500.0, "given", "fixed test inputs"),
        cost.hardware_cost(gpu_hour_usd=0.40, gpus=1),
        price,
        input_share=0.75,
    )
    assert report.self_output_usd_mtok == pytest.approx(0.925926, rel=1e-5)
    assert report.self_input_usd_mtok == pytest.approx(0.0444444, rel=1e-5)
    assert report.self_blended_usd_mtok == pytest.approx(0.264815, rel=1e-5)
    assert report.capacity_mtok_day == pytest.approx(36.2517, rel=1e-4)
    assert report.api_blended_usd_mtok == pytest.approx(0.30)
    assert report.daily_cost_usd == pytest.approx(9.60)
    assert report.break_even_mtok_day == pytest.approx(32.0)
    assert report.break_even_reachable is True and report.break_even == "reachable"
    assert report.api_parity_mtok_day == pytest.approx(32.0)
    assert report.capacity_max_mtok_day == report.capacity_mtok_day
    assert any("estimate" in n for n in report.notes)


def test_against_gpt41_with_owned_hardware() -> None:
    """Same speeds, owned RTX 4090 box: 450 W at $0.30/kWh + $1,800 over 36 months.
    hourly 0.203446 -> $4.8827/day; GPT-4.1 mix 0.75 x 2 + 0.25 x 8 = $3.50/Mtok;
    break-even 4.8827 / 3.5 = 1.395 Mtok/day."""
    report = cost.cost_report(
        "qwen3-coder-30b-a3b",
        cost.Speed(120.0, 2500.0, "given", "fixed"),
        cost.hardware_cost(power_w=450, kwh_usd=0.30, capex_usd=1800, months=36),
        cost.price_by_id(_prices(), "gpt-4.1"),
    )
    assert report.api_blended_usd_mtok == pytest.approx(3.5)
    assert report.daily_cost_usd == pytest.approx(4.88270, rel=1e-4)
    assert report.break_even_mtok_day == pytest.approx(1.39506, rel=1e-4)
    assert report.break_even_reachable is True


def test_unreachable_break_even_and_unknown_prefill() -> None:
    slow = cost.cost_report(
        "m",
        cost.Speed(5.0, 50.0, "given", "slow"),
        cost.hardware_cost(gpu_hour_usd=2.0),
        cost.price_by_id(_prices(), "qwen3-coder"),
    )
    # 2 $/h x 24 = $48/day needs 160 Mtok/day at $0.30; 1 Mtok of the 3:1 mix takes
    # 0.75e6/50 + 0.25e6/5 = 65,000 s, so the box serves 86400/65000 = 1.33 Mtok/day.
    assert slow.capacity_mtok_day == pytest.approx(86400 / 65000)
    assert slow.break_even == "unreachable" and slow.break_even_reachable is False
    assert slow.break_even_mtok_day is None  # never a break-even it cannot serve
    assert slow.api_parity_mtok_day == pytest.approx(160.0)
    unknown = cost.cost_report(
        "m",
        cost.Speed(50.0, None, "estimate", "plan"),
        cost.hardware_cost(gpu_hour_usd=1.0),
        cost.price_by_id(_prices(), "gpt-4.1"),
    )
    assert unknown.self_input_usd_mtok is None and unknown.capacity_mtok_day is None
    assert unknown.break_even_reachable is None and unknown.break_even == "unknown"
    assert unknown.self_output_usd_mtok == pytest.approx(1.0 / (50 * 3600) * 1e6)
    # $24/day at GPT-4.1's $3.50 blended: 6.86 Mtok/day; the output share alone allows
    # 86400 / (0.25e6 / 50) = 17.28 Mtok/day, so it may be reachable: reported as is.
    assert unknown.break_even_mtok_day == pytest.approx(24 / 3.5)
    assert unknown.capacity_max_mtok_day == pytest.approx(17.28)


def test_unknown_prefill_still_proves_unreachable() -> None:
    """Without a prefill speed the output share alone bounds the daily volume: 5 tok/s out
    at 3:1 serves at most 86400 / (0.25e6 / 5) = 1.728 Mtok/day, far below 160."""
    report = cost.cost_report(
        "m",
        cost.Speed(5.0, None, "estimate", "plan"),
        cost.hardware_cost(gpu_hour_usd=2.0),
        cost.price_by_id(_prices(), "qwen3-coder"),
    )
    assert report.capacity_mtok_day is None
    assert report.capacity_max_mtok_day == pytest.approx(1.728)
    assert report.break_even == "unreachable" and report.break_even_mtok_day is None


@pytest.mark.parametrize("decode", [1.0, 5.0, 30.0, 120.0, 1000.0])
@pytest.mark.parametrize("prefill", [None, 20.0, 2500.0])
@pytest.mark.parametrize("hourly", [0.2, 2.0, 20.0])
def test_break_even_never_above_what_the_machine_serves(
    decode: float, prefill: float | None, hourly: float
) -> None:
    report = cost.cost_report(
        "m",
        cost.Speed(decode, prefill, "given", "grid"),
        cost.hardware_cost(gpu_hour_usd=hourly),
        cost.price_by_id(_prices(), "qwen3-coder"),
    )
    assert report.capacity_max_mtok_day is not None
    if report.break_even_mtok_day is not None and report.capacity_mtok_day is not None:
        assert report.break_even_mtok_day <= report.capacity_mtok_day
    assert report.break_even_mtok_day is None or report.break_even != "unreachable"
    assert report.api_parity_mtok_day is not None
    if report.api_parity_mtok_day > report.capacity_max_mtok_day:
        assert report.break_even == "unreachable"


def test_cli_cost_says_unreachable_in_text_and_json() -> None:
    args = ["cost", "qwen3-coder-30b", "--gpu-hour-usd", "2", "--decode-tok-s", "5"]
    args += ["--prefill-tok-s", "50"]
    res = run(*args)
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    i = next(i for i, x in enumerate(lines) if "break-even" in x)
    assert "unreachable" in lines[i] and "at most 1.3 M tokens/day" in lines[i]
    assert "160.0 M tokens/day" in lines[i + 1]
    doc = json.loads(run(*args, "--json").stdout)
    assert doc["break_even"] == "unreachable" and doc["break_even_mtok_day"] is None
    assert doc["api_parity_mtok_day"] == pytest.approx(160.0)


def test_cli_cost_qwen3_coder_30b_on_1xrtx4090_json() -> None:
    res = run(
        "cost",
        "qwen3-coder-30b",
        "--hw",
        "1xrtx4090",
        "--gpu-hour-usd",
        "0.40",
        "--decode-tok-s",
        "120",
        "--prefill-tok-s",
        "2500",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["model"] == "qwen3-coder-30b-a3b"
    assert doc["price"]["id"] == "qwen3-coder"
    assert doc["hardware"]["hourly_usd"] == pytest.approx(0.40)  # one GPU in 1xrtx4090
    assert doc["break_even_mtok_day"] == pytest.approx(32.0)
    assert doc["break_even_reachable"] is True and doc["break_even"] == "reachable"


def test_cli_cost_table_and_errors() -> None:
    args = ["qwen3-coder-30b", "--decode-tok-s", "120", "--prefill-tok-s", "2500"]
    res = run("cost", *args, "--gpu-hour-usd", "0.4", "--vs", "gpt-4.1")
    assert res.exit_code == 0, res.stderr
    assert "GPT-4.1" in res.stdout and "break-even" in res.stdout
    assert run("cost", *args).exit_code == 2  # no hardware cost given
    assert run("cost", *args, "--gpu-hour-usd", "1", "--power-w", "300").exit_code == 2
    assert run("cost", *args, "--gpu-hour-usd", "1", "--vs", "gpt-9").exit_code == 4
    res = run("cost", "smollm2-135m", "--gpu-hour-usd", "1", "--decode-tok-s", "50")
    assert res.exit_code == 4 and "--vs" in res.stderr
    # --concurrency takes the plan's speed; --decode-tok-s gives one: not both.
    res = run("cost", *args, "--gpu-hour-usd", "1", "--concurrency", "4")
    assert res.exit_code == 2 and "--concurrency" in res.stderr
    assert (
        run("cost", "qwen3-coder-30b", "--gpu-hour-usd", "1", "--concurrency", "0").exit_code == 2
    )


def test_cost_through_the_real_planner() -> None:
    """No speeds given: the planner's best plan supplies them (estimate, or measured when
    calibrated); the report must be the plan's speed run through the same arithmetic."""
    from toolkit.api.plan import best_plan

    hw = "1xrtx4090,ram=64G"
    plan = best_plan("qwen3-coder-30b", hw=hw)
    res = run("cost", "qwen3-coder-30b", "--hw", hw, "--gpu-hour-usd", "0.40", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    speed = doc["speed"]
    assert speed["source"] in ("estimate", "measured")
    expected = plan.speed.decode_tok_s_aggregate or plan.speed.decode_tok_s
    assert speed["decode_tok_s"] == pytest.approx(expected)
    assert doc["plan"]["variant_id"] == plan.variant_id
    assert doc["self_output_usd_mtok"] == pytest.approx(0.40 / (expected * 3600) * 1e6)
    parity = 9.60 / 0.30
    assert doc["api_parity_mtok_day"] == pytest.approx(parity)
    if doc["break_even"] == "unreachable":
        assert doc["break_even_mtok_day"] is None and doc["capacity_max_mtok_day"] < parity
    else:
        assert doc["break_even_mtok_day"] == pytest.approx(parity)


def test_cost_at_a_concurrency_replans_for_it() -> None:
    """--concurrency N: the plan is made for N streams and its aggregate decode is the
    machine's throughput (the planner may pick another variant or placement for N)."""
    from toolkit.api.plan import best_plan
    from toolkit.planner.types import PlanRequest

    hw = "1xrtx4090,ram=64G"
    plan = best_plan("qwen3-coder-30b", PlanRequest(concurrency=8), hw=hw)
    args = ["cost", "qwen3-coder-30b", "--hw", hw, "--gpu-hour-usd", "0.40", "--json"]
    res = run(*args, "--concurrency", "8")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["plan"]["concurrency"] == 8 and doc["plan"]["variant_id"] == plan.variant_id
    expected = plan.speed.decode_tok_s_aggregate or plan.speed.decode_tok_s
    assert doc["speed"]["decode_tok_s"] == pytest.approx(expected)
    assert "concurrency 8" in doc["speed"]["basis"]


def test_cost_prefers_a_saved_bench_of_the_same_plan() -> None:
    """A bench result saved for the plan's variant on the plan's hardware supplies the
    speeds (marked measured) instead of the planner's estimate."""
    import threading

    from tests.test_bench import FakeOpenAI
    from toolkit import bench
    from toolkit.api import bench as api
    from toolkit.api.plan import best_plan

    hw = "1xrtx4090,ram=64G"
    plan = best_plan("qwen3-coder-30b", hw=hw)
    srv = FakeOpenAI()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        target = bench.Target(srv.base_url, "fake", api_key=srv.key)
        settings, levels = bench.run_bench(
            target, concurrency=[1, 2], prompt_tokens=64, output_tokens=10, duration_s=0.4,
            timeout_s=10,
        )  # fmt: skip
    finally:
        srv.shutdown()
        srv.server_close()
    result = bench.BenchResult(
        target={"url": srv.base_url},
        settings=settings,
        levels=levels,
        created="2026-11-29T12:00:00Z",
        model_key=plan.variant_id,
        hardware_key=plan.hardware["fingerprint"],
    )
    api.save_result(result, "fake")
    best = max(levels, key=lambda lv: lv.throughput_tok_s)
    res = run("cost", "qwen3-coder-30b", "--hw", hw, "--gpu-hour-usd", "0.40", "--json")
    assert res.exit_code == 0, res.stderr
    speed = json.loads(res.stdout)["speed"]
    assert speed["source"] == "measured" and "deploy bench" in speed["basis"]
    assert speed["decode_tok_s"] == pytest.approx(best.throughput_tok_s)
    single = levels[0]
    assert single.ttft_s.p50 is not None
    assert speed["prefill_tok_s"] == pytest.approx(64 / single.ttft_s.p50)
    # --concurrency 2 takes that level of the same bench (prefill still from level 1).
    res = run("cost", "qwen3-coder-30b", "--hw", hw, "--gpu-hour-usd", "0.40", "--json",
              "--concurrency", "2")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    speed = json.loads(res.stdout)["speed"]
    assert speed["source"] == "measured"
    assert speed["decode_tok_s"] == pytest.approx(levels[1].throughput_tok_s)
    assert speed["prefill_tok_s"] == pytest.approx(64 / single.ttft_s.p50)
    # A newer bench made on a busy machine is skipped (named in the notes), not used.
    busy = bench.BenchResult(
        target={"url": srv.base_url},
        settings=settings,
        levels=[replace(lv, throughput_tok_s=lv.throughput_tok_s / 30) for lv in levels],
        created="2026-11-29T13:00:00Z",
        model_key=plan.variant_id,
        hardware_key=plan.hardware["fingerprint"],
        machine_load={"load_avg_1m": 61.0, "cores": 2, "steal_pct": 0.0, "busy": True},
    )
    api.save_result(busy, "busy")
    res = run("cost", "qwen3-coder-30b", "--hw", hw, "--gpu-hour-usd", "0.40", "--json")
    doc = json.loads(res.stdout)
    assert doc["speed"]["decode_tok_s"] == pytest.approx(best.throughput_tok_s)
    assert any("skipped deploy bench 2026-11-29T13:00:00Z" in n and "load average" in n
               for n in doc["notes"])  # fmt: skip
