"""RAM bandwidth (DMI, measured, bw=), FLOP fields of the spec table, the Apple wired cap."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from tests.clihelp import run
from tests.hwfakes import FIXTURES
from toolkit.api import hardware as api
from toolkit.errors import UsageError
from toolkit.hardware import host as host_mod
from toolkit.hardware.apple import suggested_wired_limit, wired_cap_note
from toolkit.hardware.host import (
    MeasuredBandwidth,
    dmi_ram_bandwidth,
    measure_ram_bandwidth,
    parse_dmidecode_memory,
)
from toolkit.hardware.model import Hardware, Host
from toolkit.hardware.specs import parse_table, table
from toolkit.hardware.specstring import parse_spec

DMI = FIXTURES / "dmidecode"
GiB = 1024**3
MiB = 1024**2


# --- DMI: recorded dmidecode outputs --------------------------------------------------------


def test_dmi_amd_style_locators_two_channels() -> None:
    found = parse_dmidecode_memory((DMI / "legion5-ddr4-3200.txt").read_text())
    assert found is not None
    assert (found.channels, found.modules, found.mt_s, found.memory_type) == (2, 2, 3200, "DDR4")
    assert found.channels_named
    assert found.bandwidth_bytes_s == 2 * 8 * 3200e6  # 51.2 GB/s
    assert "51.2 GB/s from DMI: DDR4-3200, 2 channel(s)" in found.describe()


def test_dmi_intel_style_locators_sizes_in_mb() -> None:
    found = parse_dmidecode_memory((DMI / "i7-9750h-ddr4-2667.txt").read_text())
    assert found is not None
    assert (found.channels, found.mt_s) == (2, 2667)
    assert found.bandwidth_bytes_s == pytest.approx(42.672e9)


def test_dmi_two_modules_in_one_channel_count_once() -> None:
    # The recording with both modules moved to channel A (a derived variant).
    text = (DMI / "legion5-ddr4-3200.txt").read_text().replace("P0 CHANNEL B", "P0 CHANNEL A")
    found = parse_dmidecode_memory(text)
    assert found is not None
    assert (found.channels, found.modules, found.bandwidth_bytes_s) == (1, 2, 25.6e9)


def test_dmi_unnamed_locators_one_channel_per_module() -> None:
    text = (DMI / "legion5-ddr4-3200.txt").read_text()
    text = text.replace("P0 CHANNEL A", "Not Specified").replace("P0 CHANNEL B", "Not Specified")
    found = parse_dmidecode_memory(text)
    assert found is not None
    assert not found.channels_named
    assert found.bandwidth_bytes_s == 51.2e9
    assert "one channel each assumed" in found.describe()


def test_dmi_old_dmidecode_clock_speed_label() -> None:
    # dmidecode 2.x printed "Configured Clock Speed: N MHz" (a derived variant).
    text = (DMI / "i7-9750h-ddr4-2667.txt").read_text()
    text = text.replace("Configured Memory Speed: 2667 MT/s", "Configured Clock Speed: 2400 MHz")
    found = parse_dmidecode_memory(text)
    assert found is not None
    assert found.mt_s == 2400
    assert found.bandwidth_bytes_s == 2 * 8 * 2400e6


def test_dmi_empty_slots_and_no_modules() -> None:
    empty = (
        "Handle 0x0044, DMI type 17, 92 bytes\nMemory Device\n\tSize: No Module Installed\n"
        "\tLocator: DIMM 1\n\tType: Unknown\n\tSpeed: Unknown\n"
    )
    assert parse_dmidecode_memory(empty) is None
    assert parse_dmidecode_memory("") is None
    text = (DMI / "legion5-ddr4-3200.txt").read_text() + "\n" + empty
    found = parse_dmidecode_memory(text)
    assert found is not None and found.modules == 2


def _fake_dmidecode(tmp_path: Path, output: str) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    script = tmp_path / "dmidecode"
    script.write_text(f"#!/bin/sh\ntouch {marker}\ncat <<'EOF'\n{output}EOF\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, marker


def test_dmi_reader_runs_dmidecode_when_permitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table_file = tmp_path / "DMI"
    table_file.write_bytes(b"")
    monkeypatch.setattr(host_mod, "DMI_TABLE", table_file)
    monkeypatch.setattr(host_mod.platform, "system", lambda: "Linux")
    script, marker = _fake_dmidecode(tmp_path, (DMI / "legion5-ddr4-3200.txt").read_text())
    found, note = dmi_ram_bandwidth(str(script))
    assert marker.exists() and note is None
    assert found is not None and found.bandwidth_bytes_s == 51.2e9


def test_dmi_reader_does_not_ask_without_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_mod, "DMI_TABLE", tmp_path / "absent")
    monkeypatch.setattr(host_mod.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(host_mod.platform, "system", lambda: "Linux")
    script, marker = _fake_dmidecode(tmp_path, "")
    assert dmi_ram_bandwidth(str(script)) == (None, None)
    assert not marker.exists()


def test_probe_host_reports_dmi_source(monkeypatch: pytest.MonkeyPatch) -> None:
    found = parse_dmidecode_memory((DMI / "legion5-ddr4-3200.txt").read_text())
    monkeypatch.setattr(host_mod, "dmi_ram_bandwidth", lambda: (found, None))
    host, notes = host_mod.probe_host()
    assert (host.ram_bandwidth_bytes_s, host.ram_bandwidth_source) == (51.2e9, "dmi")
    assert any("from DMI" in n for n in notes)


# --- measured -----------------------------------------------------------------------------


def test_measure_ram_bandwidth_small_and_quick() -> None:
    m = measure_ram_bandwidth(budget_s=0.05, threads=2, buffer_bytes=8 * MiB)
    assert m.threads == 2 and m.buffer_bytes == 8 * MiB
    assert m.bytes_s > 1e8  # any machine copies more than 100 MB/s
    assert "measured" in m.describe() and "STREAM Copy" in m.describe()


def test_probe_replaces_dmi_but_not_chip(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = MeasuredBandwidth(bytes_s=30e9, threads=4, buffer_bytes=256 * MiB, seconds=0.6)
    monkeypatch.setattr(host_mod, "measure_ram_bandwidth", lambda: fake)
    box = Hardware(
        host=Host("cpu", 4, 8, 64 * GiB, 60 * GiB, ram_bandwidth_bytes_s=51.2e9,
                  ram_bandwidth_source="dmi")
    )  # fmt: skip
    probed = api.probe_ram_bandwidth(box)
    assert (probed.host.ram_bandwidth_bytes_s, probed.host.ram_bandwidth_source) == (
        30e9,
        "measured",
    )
    assert any("30.0 GB/s measured" in n for n in probed.notes)
    mac = parse_spec("m4-max:128G")
    kept = api.probe_ram_bandwidth(mac)
    assert (kept.host.ram_bandwidth_bytes_s, kept.host.ram_bandwidth_source) == (546e9, "chip")


def test_probe_refuses_other_machines() -> None:
    with pytest.raises(UsageError, match="--probe measures this machine"):
        api.hardware("cpu,ram=24G", probe=True)
    res = run("hw", "--probe", "--hw", "cpu,ram=24G")
    assert res.exit_code == 2 and "--probe measures this machine" in res.stderr


def test_probe_saved_profile_keeps_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = MeasuredBandwidth(bytes_s=42e9, threads=2, buffer_bytes=64 * MiB, seconds=0.3)
    monkeypatch.setattr(host_mod, "measure_ram_bandwidth", lambda: fake)
    res = run("hw", "--probe", "--save", str(tmp_path / "box.json"), "--json")
    assert res.exit_code == 0, res.stderr
    back = api.hardware(str(tmp_path / "box.json"))
    assert (back.host.ram_bandwidth_bytes_s, back.host.ram_bandwidth_source) == (
        42e9,
        "measured",
    )


# --- spec strings: bw= and chip bandwidth ---------------------------------------------------


def test_bw_key_states_its_source() -> None:
    hw = parse_spec("cpu,ram=64G,bw=80")
    assert (hw.host.ram_bandwidth_bytes_s, hw.host.ram_bandwidth_source) == (80e9, "spec")
    assert parse_spec("cpu,ram=64G").host.ram_bandwidth_source is None


def test_apple_chip_bandwidth_needs_no_memory_size() -> None:
    for name, gb_s in (("m3-max", 400), ("m3-max-30c", 300), ("m4-max", 546), ("m3-ultra", 819)):
        assert table().resolve(name).bandwidth_bytes_s == gb_s * 1e9
    with pytest.raises(UsageError, match=r"say which, e.g. m3-max:128G \(its 400 GB/s"):
        parse_spec("m3-max")
    hw = parse_spec("m3-max:64G")
    assert (hw.host.ram_bandwidth_bytes_s, hw.host.ram_bandwidth_source) == (400e9, "chip")
    assert hw.gpus[0].fp16_flops == 14.32e12


def test_unified_machines_other_than_apple() -> None:
    spark = parse_spec("dgx-spark")  # one memory size: none needed
    assert (spark.host.arch, spark.host.ram_total_bytes) == ("aarch64", 128 * GiB)
    assert spark.gpus[0].fp4_flops == 500e12 and spark.gpus[0].compute_capability == "12.1"
    halo = parse_spec("strix-halo:128G,cores=16")
    assert halo.host.arch == "x86_64" and "avx512f" in halo.host.cpu_flags
    assert halo.host.ram_bandwidth_bytes_s == 256e9
    assert halo.gpus[0].vendor == "amd" and halo.gpus[0].compute_capability == "gfx1151"


# --- the spec table's FLOP fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fp16", "fp8", "fp4", "int8"),
    [
        ("h100", 989e12, 1979e12, None, 1979e12),
        ("b200", 2250e12, 4500e12, 9000e12, 4500e12),
        ("mi300x", 1307.4e12, 2614.9e12, None, 2614.9e12),
        ("rtx4090", 165.12e12, 330.25e12, None, 660.5e12),
        ("rtx5090", 209.5e12, 419e12, 1676e12, 838e12),
        ("h20", 148e12, 296e12, None, 296e12),
        ("v100", 125e12, None, None, None),
        ("p40", None, None, None, 47e12),
    ],
)
def test_flops_per_dtype(
    name: str, fp16: float | None, fp8: float | None, fp4: float | None, int8: float | None
) -> None:
    s = table().resolve(name)
    assert (s.fp16_flops, s.fp8_flops, s.fp4_flops, s.int8_ops) == (fp16, fp8, fp4, int8)
    g = parse_spec(name).gpus[0]
    assert (g.fp16_flops, g.fp8_flops, g.fp4_flops, g.int8_ops) == (fp16, fp8, fp4, int8)


def test_new_entries_and_names() -> None:
    t = table()
    for name in (
        "p40",
        "v100",
        "v100-32g",
        "v100-pcie",
        "v100-pcie-32g",
        "h800",
        "h800-pcie",
        "h20",
        "gb10",
        "rx7900xtx",
        "rx7900xt",
        "ryzen-ai-max-395",
        "rtx5060",
        "rtx5060ti",
        "rtx5070",
        "rtx5070ti",
        "rtx5080",
        "rtx5090",
        "a10",
        "l4",
        "l40s",
    ):
        assert t.get(name) is not None, name
    assert t.match_reported("Tesla V100-SXM2-32GB") is t.get("v100-32g")
    assert t.match_reported("Tesla P40") is t.get("p40")
    assert t.match_reported("AMD Radeon RX 7900 XTX") is t.get("rx7900xtx")
    for chip in (
        "m1",
        "m1-pro",
        "m1-max",
        "m1-ultra",
        "m2",
        "m2-pro",
        "m2-max",
        "m2-ultra",
        "m3",
        "m3-pro",
        "m3-max",
        "m3-max-30c",
        "m3-ultra",
        "m4",
        "m4-pro",
        "m4-max",
        "m4-max-32c",
    ):
        spec = t.resolve(chip)
        assert spec.vendor == "apple" and spec.bandwidth_bytes_s, chip


def test_every_entry_is_consistent() -> None:
    t = table()
    for s in t.entries:
        for value in (s.fp16_flops, s.fp8_flops, s.fp4_flops, s.int8_ops, s.fp32_flops):
            assert value is None or value > 0
        assert s.fp8_flops is None or s.fp8
        assert s.fp4_flops is None or s.fp4
        # third-party sources are labelled: a tp- source needs a note or a flops_note
        if any(r.startswith("tp-") for r in s.sources):
            assert s.note or s.flops_note, s.name


_TABLE = """
sources: {a: https://example.org}
gpus:
  x: {full_name: X, vendor: nvidia, memory: 8GiB, sources: [a], %s}
"""


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ("fp8_tflops: 10", "fp8_tflops given but fp8 is not true"),
        ("fp4_tflops: 10, fp8: true", "fp4_tflops given but fp4 is not true"),
        ("fp16_tflops: -1", "must be a positive number"),
        ("fp16_tflop: 1", "unknown field"),
    ],
)
def test_table_refuses_bad_flops(fields: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_table(_TABLE % fields)


# --- the Apple GPU wired-memory cap ---------------------------------------------------------


def test_wired_cap_note_default_estimate() -> None:
    note = wired_cap_note(parse_spec("m3-max:128G"))
    assert note == (
        "GPU working-set cap 96.0 GiB of 128.0 GiB (macOS default, estimated); "
        "`sudo sysctl iogpu.wired_limit_mb=122880` would give 120.0 GiB "
        "(leaves 8.0 GiB to macOS; lasts until reboot)"
    )


def test_wired_cap_note_small_mac_and_raised_cap() -> None:
    assert suggested_wired_limit(16 * GiB) == 12 * 1024  # a quarter kept below 32 GiB
    note = wired_cap_note(parse_spec("m2:16G"))
    assert note is not None and "iogpu.wired_limit_mb=12288" in note
    raised = wired_cap_note(parse_spec("m4-max:64G,wired=60G"))
    assert raised is not None and "(as stated by wired=)" in raised
    assert "already at or above" in raised


def test_wired_cap_note_detected_and_non_apple() -> None:
    mac = parse_spec("m4-max:64G")
    detected = replace(mac, source="detected")
    note = wired_cap_note(detected)
    assert note is not None and "as Metal/sysctl report it" in note
    assert wired_cap_note(parse_spec("2xrtx3090,ram=64G")) is None


def test_env_has_no_real_dmi_side_effects() -> None:
    # probe_host never raises, whatever dmidecode does here.
    host, _ = host_mod.probe_host()
    assert host.ram_bandwidth_source in (None, "dmi")
    assert os.cpu_count()
