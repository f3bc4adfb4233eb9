"""What self-hosting costs per million tokens, against API prices, and where it breaks even.

Pure arithmetic on explicit inputs (speed, hardware cost, a price-table entry); the API
layer (toolkit/api/bench.py) finds those inputs: measured bench results when present, else
the planner's estimate.

The model, stated once:

* the machine costs `hourly_usd` for every hour it exists (a rented GPU by the hour, or
  power at the stated draw plus purchase price spread over `months`), and is kept on all
  day: daily cost = 24 × hourly;
* at full load it produces output tokens at the aggregate decode rate and reads input
  tokens at the prefill rate, one after the other: an input token costs hourly / (prefill
  tok/s × 3600), an output token hourly / (decode tok/s × 3600);
* traffic is a mix of input and output tokens (`input_share` of all tokens are input);
* break-even: the daily volume at which the API bill equals the machine's daily cost. It is
  reachable only if the machine can serve that volume in a day; when it cannot, the report
  says "unreachable" and gives no break-even figure (a volume above what the machine can
  produce is no break-even). With no prefill speed, the output share alone bounds what
  the machine can serve, which is still enough to call a break-even unreachable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from toolkit.errors import NotFound, RecipeError, UsageError

HOURS_PER_MONTH = 365.25 * 24 / 12  # 730.5
SECONDS_PER_DAY = 86400
SpeedSource = Literal["measured", "estimate", "given"]
BreakEven = Literal["reachable", "unreachable", "unknown"]


# --------------------------------------------------------------------------- price table


@dataclass(frozen=True)
class Price:
    id: str
    name: str
    input: float
    output: float
    provider: str = ""
    as_of: str = ""
    estimate: bool = False
    source: str = ""
    #: Recipe model ids or families this API price applies to.
    models: tuple[str, ...] = ()
    note: str = ""
    #: The file this entry came from.
    origin: str = ""


def shipped_prices_file() -> Path:
    return Path(__file__).parent / "data" / "prices.yaml"


def user_prices_file() -> Path:
    from toolkit import settings

    return settings.config_dir() / "prices.yaml"


def _parse_prices(path: Path) -> list[Price]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(str(path), "", f"cannot read the price table: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("prices"), list):
        raise RecipeError(str(path), "prices", "expected a list of price entries")
    out: list[Price] = []
    for i, item in enumerate(doc["prices"]):
        where = f"prices[{i}]"
        if not isinstance(item, dict):
            raise RecipeError(str(path), where, "expected a mapping")
        for key in ("id", "name", "input", "output"):
            if key not in item:
                raise RecipeError(str(path), f"{where}.{key}", "missing")
        try:
            pin, pout = float(item["input"]), float(item["output"])
        except (TypeError, ValueError) as exc:
            raise RecipeError(str(path), where, "input and output must be numbers") from exc
        if pin < 0 or pout < 0:
            raise RecipeError(str(path), where, "prices cannot be negative")
        out.append(
            Price(
                id=str(item["id"]),
                name=str(item["name"]),
                input=pin,
                output=pout,
                provider=str(item.get("provider") or ""),
                as_of=str(item.get("as_of") or ""),
                estimate=bool(item.get("estimate", False)),
                source=str(item.get("source") or "").strip(),
                models=tuple(str(m) for m in item.get("models") or ()),
                note=" ".join(str(item.get("note") or "").split()),
                origin=str(path),
            )
        )
    return out


def load_prices(user_file: Path | None = None) -> list[Price]:
    """The shipped table, with the user's file (default $DEPLOY_HOME/config/prices.yaml)
    replacing entries of the same id and adding new ones."""
    table = {p.id: p for p in _parse_prices(shipped_prices_file())}
    path = user_file if user_file is not None else user_prices_file()
    if path.exists():
        for p in _parse_prices(path):
            table[p.id] = p
    return list(table.values())


def price_by_id(prices: list[Price], price_id: str) -> Price:
    for p in prices:
        if p.id.lower() == price_id.lower():
            return p
    known = ", ".join(p.id for p in prices)
    raise NotFound(
        f"no API price {price_id!r} in the price table (known: {known})",
        hint=f"add it to {user_prices_file()}, or pick one: deploy cost MODEL --vs gpt-4.1",
    )


def price_for_model(prices: list[Price], model_id: str, family: str | None) -> Price | None:
    """The entry naming this exact model, else one naming its family."""
    for key in (model_id, family):
        if not key:
            continue
        for p in prices:
            if key in p.models:
                return p
    return None


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class HardwareCost:
    hourly_usd: float
    basis: str


def hardware_cost(
    *,
    gpu_hour_usd: float | None = None,
    gpus: int = 1,
    power_w: float | None = None,
    kwh_usd: float | None = None,
    capex_usd: float | None = None,
    months: float | None = None,
) -> HardwareCost:
    """Hourly cost of the machine from exactly one of: a rental price per GPU-hour, or power
    × electricity price (+ purchase price amortised over `months`)."""
    if gpu_hour_usd is not None:
        if any(v is not None for v in (power_w, kwh_usd, capex_usd, months)):
            raise UsageError(
                "give either --gpu-hour-usd, or --power-w with --kwh-usd (and optionally "
                "--capex-usd with --months), not both"
            )
        if gpu_hour_usd <= 0:
            raise UsageError("--gpu-hour-usd must be positive")
        n = max(1, gpus)
        unit = "GPU" if gpus >= 1 else "machine"
        return HardwareCost(
            gpu_hour_usd * n, f"${gpu_hour_usd:g} per {unit}-hour × {n} {unit}(s), on 24 h/day"
        )
    if power_w is None or kwh_usd is None:
        raise UsageError(
            "say what the hardware costs: --gpu-hour-usd X, or --power-w W --kwh-usd Y "
            "(optionally --capex-usd C --months M)",
            hint="deploy cost MODEL --hw 1xrtx4090 --power-w 450 --kwh-usd 0.30",
        )
    if power_w <= 0 or kwh_usd < 0:
        raise UsageError("--power-w must be positive and --kwh-usd not negative")
    hourly = power_w / 1000 * kwh_usd
    basis = f"{power_w:g} W × ${kwh_usd:g}/kWh on 24 h/day"
    if capex_usd is not None or months is not None:
        if capex_usd is None or months is None or months <= 0 or capex_usd < 0:
            raise UsageError("--capex-usd and --months go together (months > 0)")
        hourly += capex_usd / (months * HOURS_PER_MONTH)
        basis += f" + ${capex_usd:g} over {months:g} months"
    return HardwareCost(hourly, basis)


@dataclass(frozen=True)
class Speed:
    #: Output tokens per second the server sustains, all streams together.
    decode_tok_s: float | None
    #: Input (prompt) tokens per second.
    prefill_tok_s: float | None
    source: SpeedSource
    basis: str


def parse_mix(text: str) -> float:
    """'3:1' (input:output tokens) -> input share 0.75."""
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError as exc:
        raise UsageError(f"bad --mix {text!r}: expected INPUT:OUTPUT such as 3:1") from exc
    if a < 0 or b < 0 or a + b == 0:
        raise UsageError(f"bad --mix {text!r}: parts must be >= 0 and not both 0")
    return a / (a + b)


# ------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class CostReport:
    model: str
    speed: Speed
    hardware: HardwareCost
    price: Price
    #: Share of all tokens that are input (prompt) tokens.
    input_share: float
    daily_cost_usd: float
    #: Self-hosting $ per million tokens at full load (None where the speed is unknown).
    self_input_usd_mtok: float | None
    self_output_usd_mtok: float | None
    self_blended_usd_mtok: float | None
    api_blended_usd_mtok: float
    #: Million tokens (of the mix) the machine serves in a day at full load.
    capacity_mtok_day: float | None
    #: Million tokens a day at which the API bill equals the machine's daily cost; None
    #: when the machine cannot serve that much in a day (`break_even == "unreachable"`).
    break_even_mtok_day: float | None
    break_even_reachable: bool | None
    #: "unreachable" when the volume the API bill needs to match the machine's cost is
    #: more than the machine serves in a day; "unknown" when its capacity is unknown.
    break_even: BreakEven = "unknown"
    #: The daily volume at which the API bill equals the machine's cost, reachable or not.
    api_parity_mtok_day: float | None = None
    #: At most this many Mtok/day: the capacity, or when prefill is unknown the output
    #: share alone at the decode rate (an upper bound).
    capacity_max_mtok_day: float | None = None
    notes: tuple[str, ...] = ()
    plan: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_mtok(hourly: float, tok_s: float | None) -> float | None:
    if tok_s is None or tok_s <= 0:
        return None
    return hourly / (tok_s * 3600) * 1e6


def cost_report(
    model: str,
    speed: Speed,
    hardware: HardwareCost,
    price: Price,
    *,
    input_share: float = 0.75,
    plan: dict[str, Any] | None = None,
    notes: tuple[str, ...] = (),
) -> CostReport:
    if not 0 <= input_share <= 1:
        raise UsageError("the input share must be between 0 and 1")
    r = input_share
    h = hardware.hourly_usd
    self_in = _per_mtok(h, speed.prefill_tok_s)
    self_out = _per_mtok(h, speed.decode_tok_s)
    # Seconds the machine needs for one million tokens of the mix.
    sec_per_mtok: float | None = None
    need_in, need_out = r > 0, r < 1
    if not ((need_in and not speed.prefill_tok_s) or (need_out and not speed.decode_tok_s)):
        sec_per_mtok = (
            r * 1e6 / speed.prefill_tok_s if need_in and speed.prefill_tok_s else 0.0
        ) + ((1 - r) * 1e6 / speed.decode_tok_s if need_out and speed.decode_tok_s else 0.0)
    capacity = SECONDS_PER_DAY / sec_per_mtok if sec_per_mtok else None
    bound = capacity
    if bound is None and need_out and speed.decode_tok_s:
        # Prompts cost at least nothing: the output share alone caps the volume.
        bound = SECONDS_PER_DAY / ((1 - r) * 1e6 / speed.decode_tok_s)
    blended_self = h / 3600 * sec_per_mtok if sec_per_mtok else None
    api_blended = r * price.input + (1 - r) * price.output
    daily = 24 * h
    parity = daily / api_blended if api_blended > 0 else None
    reachable: bool | None = None
    if parity is not None and bound is not None and parity > bound:
        reachable = False
    elif parity is not None and capacity is not None:
        reachable = True
    status: BreakEven = (
        "unknown" if reachable is None else "reachable" if reachable else "unreachable"
    )
    extra = list(notes)
    if price.estimate:
        extra.append(f"API price {price.id} is an estimate ({price.as_of or 'undated'})")
    if speed.prefill_tok_s is None:
        extra.append("prefill speed unknown: input cost and capacity not computed")
    return CostReport(
        model=model,
        speed=speed,
        hardware=hardware,
        price=price,
        input_share=r,
        daily_cost_usd=daily,
        self_input_usd_mtok=self_in,
        self_output_usd_mtok=self_out,
        self_blended_usd_mtok=blended_self,
        api_blended_usd_mtok=api_blended,
        capacity_mtok_day=capacity,
        break_even_mtok_day=None if reachable is False else parity,
        break_even_reachable=reachable,
        break_even=status,
        api_parity_mtok_day=parity,
        capacity_max_mtok_day=bound,
        notes=tuple(extra),
        plan=plan or {},
    )
