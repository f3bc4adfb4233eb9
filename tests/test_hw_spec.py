"""Spec strings (`--hw`), the GPU spec table, and every bad-spec error."""

from __future__ import annotations

import pytest

from tests.clihelp import run
from toolkit.errors import UsageError
from toolkit.hardware.profile import load_hardware
from toolkit.hardware.specs import parse_table, table
from toolkit.hardware.specstring import apple_default_working_set

MiB = 1024**2
GiB = 1024**3


def test_two_3090s_with_ram() -> None:
    hw = load_hardware("2xrtx3090,ram=128G")
    assert [(g.index, g.total_bytes, g.free_bytes) for g in hw.gpus] == [
        (0, 24 * GiB, 24 * GiB),
        (1, 24 * GiB, 24 * GiB),
    ]
    assert all(g.bandwidth_bytes_s == 936e9 and g.compute_capability == "8.6" for g in hw.gpus)
    assert hw.host.ram_total_bytes == hw.host.ram_available_bytes == 128 * GiB
    assert (hw.source, hw.origin) == ("spec", "2xrtx3090,ram=128G")


def test_cpu_box() -> None:
    hw = load_hardware("cpu,ram=24G,cores=2")
    assert hw.gpus == ()
    assert (hw.host.physical_cores, hw.host.ram_total_bytes) == (2, 24 * GiB)


def test_any_gpu_with_exact_memory() -> None:
    (g,) = load_hardware("gpu:79.18GiB").gpus
    assert g.total_bytes == g.free_bytes == round(79.18 * GiB)
    assert g.bandwidth_bytes_s is None and g.vendor == "other"
    hw = load_hardware("gpu:79.18GiB")
    assert any("RAM not given" in n for n in hw.notes)
    assert (hw.host.ram_total_bytes, hw.host.ram_known, hw.host.cores_known) == (0, False, False)
    assert load_hardware("gpu:24G,ram=64G,cores=8").host.ram_known


def test_units_binary_and_decimal() -> None:
    assert load_hardware("cpu,ram=128GB").host.ram_total_bytes == 128 * 10**9
    assert load_hardware("cpu,ram=2T").host.ram_total_bytes == 2 * 1024**4
    assert load_hardware("cpu,ram=512MiB").host.ram_total_bytes == 512 * MiB


def test_eight_h100_and_names() -> None:
    hw = load_hardware("8xh100,ram=2T")
    assert len(hw.gpus) == 8 and hw.gpus[0].name == "NVIDIA H100 SXM5 80GB"
    assert hw.gpus[0].total_bytes == 81559 * MiB  # what the driver reports, recorded
    assert load_hardware("h100-pcie").gpus[0].bandwidth_bytes_s == 2000e9
    assert load_hardware("a100").gpus[0].total_bytes == 80 * GiB
    assert load_hardware("a100-40g").gpus[0].total_bytes == 40 * GiB
    for spelling in ("RTX 3090", "rtx-3090", "RTX_3090", "1 x rtx3090", "1×rtx3090"):
        assert load_hardware(spelling).gpus[0].name == "NVIDIA GeForce RTX 3090"


def test_named_gpu_with_memory_override() -> None:
    (g,) = load_hardware("rtx3090:20G").gpus
    assert g.total_bytes == 20 * GiB and g.bandwidth_bytes_s == 936e9


def test_ram_bandwidth() -> None:
    assert load_hardware("cpu,ram=64G,bw=89.6").host.ram_bandwidth_bytes_s == 89.6e9
    assert load_hardware("cpu,bw=400GB/s").host.ram_bandwidth_bytes_s == 400e9


def test_apple_spec() -> None:
    hw = load_hardware("m3-max:128G")
    (g,) = hw.gpus
    assert g.unified_memory and g.total_bytes == 128 * GiB
    assert g.free_bytes == g.working_set_limit_bytes == 96 * GiB
    assert hw.host.ram_total_bytes == 128 * GiB and hw.host.os == "darwin"
    assert hw.host.ram_bandwidth_bytes_s == 400e9
    wired = load_hardware("m3-max:128G,wired=120G").gpus[0]
    assert wired.free_bytes == 120 * GiB
    assert load_hardware("m4-max,ram=64G").gpus[0].total_bytes == 64 * GiB


def test_apple_default_share() -> None:
    assert apple_default_working_set(32 * GiB) == 32 * GiB * 2 // 3
    assert apple_default_working_set(64 * GiB) == 48 * GiB


@pytest.mark.parametrize(
    ("spec", "token", "says"),
    [
        ("3xnope", "3xnope", "unknown GPU 'nope'"),
        ("h1000", "h1000", "did you mean"),
        ("gpu:abc", "gpu:abc", "bad GPU memory"),
        ("rtx3090:12XB", "rtx3090:12XB", "unknown unit"),
        ("rtx3090:", "rtx3090:", "a size must follow"),
        ("gpu", "gpu", "needs its memory size"),
        ("0xh100", "0xh100", "greater than zero, not 0"),
        ("-1xh100", "-1xh100", "greater than zero, not -1"),
        ("1.5xh100", "1.5xh100", "whole number"),
        ("cpu,2xrtx3090", "cpu,2xrtx3090", "`cpu` means a machine without GPUs"),
        ("cpu,cpu", "cpu", "given twice"),
        ("rtx3090,ram=64G,ram=128G", "ram=128g", "ram= is given twice"),
        ("rtx3090,foo=1", "foo=1", "unknown key 'foo'"),
        ("rtx3090,ram=", "ram=", "needs a value"),
        ("rtx3090,,ram=1G", "", "empty item"),
        ("", "", "empty hardware spec"),
        ("cpu,ram=lots", "ram=lots", "bad RAM"),
        ("cpu,cores=0", "cores=0", "greater than zero"),
        ("cpu,cores=two", "cores=two", "whole number"),
        ("cpu,bw=fast", "bw=fast", "GB/s"),
        ("m3-max", "m3-max", "say which, e.g. m3-max:128G"),
        ("m3-max:128G,rtx4090", "m3-max:128G", "cannot be combined"),
        ("2xm3-max:128G", "2xm3-max:128G", "cannot be combined"),
        ("m3-max:128G,ram=64G", "ram=64g", "unified memory"),
        ("rtx4090,wired=10G", "wired=10g", "Apple Silicon"),
        ("m2:16G,wired=32G", "wired=32g", "cannot exceed"),
    ],
)
def test_bad_spec(spec: str, token: str, says: str) -> None:
    with pytest.raises(UsageError) as err:
        load_hardware(spec)
    message = f"{err.value.message} {err.value.hint or ''}"
    assert says.lower() in message.lower()
    if token:
        assert f"'{token.lower()}'" in message.lower()
    res = run("hw", "--hw", spec)
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: ") and says.lower() in res.stderr.lower()


def test_unknown_gpu_hint_names_close_match() -> None:
    with pytest.raises(UsageError) as err:
        load_hardware("rtx309")
    assert err.value.hint is not None and "rtx3090" in err.value.hint


def test_every_name_resolves_to_one_entry() -> None:
    specs = table()
    assert len(specs.entries) >= 60
    seen: dict[str, str] = {}
    for entry in specs.entries:
        for name in (entry.name, *entry.aliases):
            assert specs.resolve(name) is entry
            assert name not in seen
            seen[name] = entry.name
        assert entry.sources and all(specs.sources[s].startswith("https://") for s in entry.sources)
        assert entry.memory_bytes > 0


def test_required_gpus_are_listed() -> None:
    specs = table()
    for name in [
        "rtx2080ti",
        "rtx3090",
        "rtx4090",
        "rtx5090",
        "rtx-a4000",
        "rtx-a6000",
        "rtx6000-ada",
        "rtx-pro-6000",
        "t4",
        "l4",
        "l40s",
        "a10",
        "a100-40g",
        "a100",
        "h100",
        "h100-pcie",
        "h200",
        "b200",
        "gb200",
        "mi210",
        "mi250",
        "mi300x",
        "m1",
        "m1-pro",
        "m1-max",
        "m1-ultra",
        "m2-ultra",
        "m3-max",
        "m3-ultra",
        "m4",
        "m4-pro",
        "m4-max",
        "jetson-agx-orin-64g",
    ]:
        assert specs.get(name) is not None, name


def test_duplicate_names_are_refused() -> None:
    text = """
sources: {s: https://example.org}
gpus:
  a: {full_name: A, vendor: nvidia, memory: 1GiB, sources: [s]}
  b: {full_name: B, vendor: nvidia, memory: 1GiB, aliases: [A], sources: [s]}
"""
    with pytest.raises(ValueError, match="'A' is used by a and b"):
        parse_table(text)


def test_entries_need_a_source() -> None:
    text = "sources: {}\ngpus:\n  a: {full_name: A, vendor: nvidia, memory: 1GiB}\n"
    with pytest.raises(ValueError, match="needs a source"):
        parse_table(text)


@pytest.mark.parametrize("spec", ["1000000xh100", "99999999999999999999xh100", "65xh100",
                                  "8xh100,8xa100,50xl4"])  # fmt: skip
def test_gpu_counts_are_bounded_at_parse_time(spec: str) -> None:
    import time

    from toolkit.errors import UsageError
    from toolkit.hardware.specstring import MAX_GPUS, parse_spec

    t0 = time.monotonic()
    with pytest.raises(UsageError) as info:
        parse_spec(spec)
    assert time.monotonic() - t0 < 5.0  # refused before anything is built per GPU
    assert f"at most {MAX_GPUS}" in info.value.message
    assert len(parse_spec(f"{MAX_GPUS}xh100").gpus) == MAX_GPUS
