"""Each probe fed real recorded outputs (tests/fixtures/hw) through real seams."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hwfakes import FIXTURES, FakeNvml, Tools
from toolkit.hardware.amd import probe_amd
from toolkit.hardware.apple import probe_apple
from toolkit.hardware.detect import enrich
from toolkit.hardware.nvidia import parse_smi_xml, probe_nvidia, probe_nvml, probe_smi
from toolkit.hardware.specs import table
from toolkit.hardware.visible import apply_visible

MiB = 1024**2
GiB = 1024**3


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    t = Tools(tmp_path / "bin", monkeypatch)
    t.bin_dir.mkdir()
    t.on_path()
    return t


# --- nvidia-smi fallback: a fake `nvidia-smi` first on PATH replays recorded outputs ---------


def test_smi_h100_capture_verbatim(tools: Tools) -> None:
    tools.nvidia_smi("h100-capture")
    probe = probe_smi()
    assert probe.notes == ()
    (g,) = probe.gpus
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert g.total_bytes == 81559 * MiB
    assert g.free_bytes == 81081 * MiB  # total - used - 479 MiB reserved, as recorded
    assert g.used_by_others_bytes == 0
    assert (g.compute_capability, g.driver_version, g.power_limit_w) == ("9.0", "590.48.01", 700.0)
    assert g.uuid == "GPU-00000000-0000-0000-0000-000000000000" and not g.mig


def test_smi_8x_h100(tools: Tools) -> None:
    tools.nvidia_smi("h100-x8")
    probe = probe_smi()
    assert len(probe.gpus) == 8
    assert [g.index for g in probe.gpus] == list(range(8))
    assert all(g.total_bytes == 81559 * MiB for g in probe.gpus)
    assert all(g.free_bytes == 81558 * MiB for g in probe.gpus)  # table shows no free
    assert any("taken as total - used" in n for n in probe.notes)
    gpus = enrich(probe.gpus)
    assert all(g.bandwidth_bytes_s == 3350e9 and g.compute_capability == "9.0" for g in gpus)
    assert all(g.fp8 and g.bf16 and not g.int4 for g in gpus)


def test_smi_2x_rtx3090(tools: Tools) -> None:
    tools.nvidia_smi("rtx3090-x2")
    probe = probe_smi()
    assert [g.total_bytes for g in probe.gpus] == [24 * GiB, 24 * GiB]
    assert [g.power_limit_w for g in probe.gpus] == [280.0, 280.0]
    assert all(g.used_by_others_bytes is None for g in probe.gpus)
    gpus = enrich(probe.gpus)
    assert [g.bandwidth_bytes_s for g in gpus] == [936e9, 936e9]
    assert all(g.compute_capability == "8.6" and g.bf16 and not g.fp8 for g in gpus)


def test_smi_1x_rtx4090(tools: Tools) -> None:
    tools.nvidia_smi("rtx4090-x1")
    (g,) = enrich(probe_smi().gpus)
    assert (g.total_bytes, g.free_bytes, g.used_by_others_bytes) == (
        24564 * MiB,
        24214 * MiB,
        2 * MiB,
    )
    assert g.bandwidth_bytes_s == 1008e9 and g.fp8 and g.compute_capability == "8.9"
    assert g.power_limit_w is None  # not in the recorded source


def test_smi_a100_mig_slices_are_the_devices(tools: Tools) -> None:
    tools.nvidia_smi("a100-mig")
    probe = probe_smi()
    assert probe.notes == ()
    assert len(probe.gpus) == 4
    for n, g in enumerate(probe.gpus):
        assert g.mig and g.mig_profile == "1g.20gb"
        assert g.name == "NVIDIA A100-SXM4-80GB MIG 1g.20gb"
        assert (g.total_bytes, g.free_bytes) == (19968 * MiB, 19955 * MiB)
        assert g.index == n and g.physical_index == 0
        assert g.cuda_version == "12.2" and g.power_limit_w == 500.0
    assert [g.uuid for g in probe.gpus] == [
        "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a",
        "MIG-a45882f0-9215-5733-a0c1-49286ab31cb5",
        "MIG-f00d722c-f4e1-52c9-aa31-750441ae1bfe",
        "MIG-930574a9-d43a-5d2b-95da-3e68384c8d6b",
    ]
    slice0 = enrich(probe.gpus)[0]
    # A slice owns its share of memory controllers: 19968/81920 of 2039 GB/s.
    assert slice0.bandwidth_bytes_s == pytest.approx(2039e9 * 19968 / 81920)
    assert slice0.fp16_flops is None


def test_smi_xml_without_mig() -> None:
    cuda, boards = parse_smi_xml((FIXTURES / "nvidia-smi/rtx4090-x1/query.xml").read_text())
    assert cuda == "12.2" and list(boards.values()) == [[]]
    cuda, boards = parse_smi_xml((FIXTURES / "nvidia-smi/rtx3090-telegraf.xml").read_text())
    assert cuda == "12.0" and all(v == [] for v in boards.values())


def test_smi_missing_is_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probe_smi().notes == ("nvidia-smi not found on PATH",)


def test_smi_failure_is_a_note(tools: Tools) -> None:
    tools.nvidia_smi("does-not-exist")
    probe = probe_smi()
    assert probe.gpus == () and probe.notes[0].startswith("nvidia-smi failed")


# --- NVML: a stand-in module with recorded readings passed through the probe's seam ---------


def test_nvml_h100_mig() -> None:
    nvml = FakeNvml("h100-mig.json")
    probe = probe_nvml(nvml)
    assert nvml.shutdowns == 1
    assert [g.mig_profile for g in probe.gpus] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert [g.total_bytes // MiB for g in probe.gpus] == [40448, 20096, 9984, 9984]
    assert [g.free_bytes // MiB for g in probe.gpus] == [40423, 20080, 9976, 9976]
    g = probe.gpus[0]
    assert (g.driver_version, g.cuda_version, g.compute_capability) == ("590.48.01", "13.1", "9.0")
    assert (
        g.power_limit_w == 700.0 and g.mig and g.uuid == "MIG-00000000-0000-0000-0000-000000000000"
    )


def test_nvml_two_boards() -> None:
    probe = probe_nvml(FakeNvml("h200-l40s.json"))
    assert [g.name for g in probe.gpus] == ["NVIDIA H200", "NVIDIA L40S"]
    assert [g.free_bytes // MiB for g in probe.gpus] == [143158, 45460]
    assert [g.compute_capability for g in probe.gpus] == ["9.0", "8.9"]
    h200, l40s = enrich(probe.gpus)
    assert (h200.bandwidth_bytes_s, l40s.bandwidth_bytes_s) == (4800e9, 864e9)


def test_nvml_missing_library_note() -> None:
    probe = probe_nvml(FakeNvml(None, library_missing=True))
    assert probe.gpus == ()
    assert probe.notes[0].startswith("NVML not available: libnvidia-ml.so.1 not found")


def test_nvidia_falls_back_to_smi_when_nvml_missing(tools: Tools) -> None:
    tools.nvidia_smi("rtx3090-x2")
    probe = probe_nvidia(FakeNvml(None, library_missing=True))
    assert len(probe.gpus) == 2
    assert probe.notes[0].startswith("NVML not available")


def test_nvidia_prefers_nvml(tools: Tools) -> None:
    tools.nvidia_smi("rtx3090-x2")
    probe = probe_nvidia(FakeNvml("h200-l40s.json"))
    assert [g.name for g in probe.gpus] == ["NVIDIA H200", "NVIDIA L40S"]


# --- CUDA_VISIBLE_DEVICES, applied as CUDA applies it --------------------------------------


@pytest.mark.parametrize(
    ("visible", "names", "physical"),
    [
        (None, ["NVIDIA H200", "NVIDIA L40S"], [0, 1]),
        ("1", ["NVIDIA L40S"], [1]),
        ("1,0", ["NVIDIA L40S", "NVIDIA H200"], [1, 0]),
        ("GPU-00000000-0000-0000-0000-000000000001", ["NVIDIA L40S"], [1]),
        ("", [], []),
        ("-1", [], []),
        ("0,7,1", ["NVIDIA H200"], [0]),
    ],
)
def test_cuda_visible_devices(visible: str | None, names: list[str], physical: list[int]) -> None:
    gpus, notes = apply_visible(probe_nvml(FakeNvml("h200-l40s.json")).gpus, visible)
    assert [g.name for g in gpus] == names
    assert [g.index for g in gpus] == list(range(len(names)))
    assert [g.physical_index for g in gpus] == physical
    if visible is not None:
        assert notes and "CUDA_VISIBLE_DEVICES" in notes[0]


def test_cuda_visible_devices_mig_uuid() -> None:
    gpus, _ = apply_visible(
        probe_nvml(FakeNvml("h100-mig.json")).gpus, "MIG-00000001-0000-0000-0000-000000000001"
    )
    assert [(g.index, g.mig_profile) for g in gpus] == [(0, "2g.20gb")]


# --- AMD: a fake `rocm-smi` replays recorded JSON ------------------------------------------


def test_rocm_smi_rx7900xt(tools: Tools) -> None:
    tools.rocm_smi("rx7900xt.json")
    (g,) = probe_amd().gpus
    assert (g.name, g.vendor, g.arch) == ("Radeon RX 7900 XT", "amd", "gfx1100")
    assert g.total_bytes == 21458059264
    assert g.free_bytes == 21458059264 - 27856896
    assert g.device_id == "rocm:0"
    (e,) = enrich((g,))  # the spec table knows it by the name rocm-smi reports
    assert (e.bandwidth_bytes_s, e.bf16, e.fp16_flops) == (800e9, True, 103e12)
    assert table().resolve("rx7900xt").memory_bytes == g.total_bytes  # the recorded size


def test_amd_no_tools_no_subprocess(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probe_amd().notes == ("AMD: neither rocm-smi nor amd-smi on PATH",)


# --- Apple: a fake `sysctl` replays recorded Mac sysctl dumps --------------------------------


def test_apple_m3_max_36g_default_cap(tools: Tools) -> None:
    sysctl = tools.sysctl("darwin-sequoia-m3.txt")
    probe = probe_apple(str(sysctl), metal=None)
    (g,) = probe.gpus
    assert g.name == "Apple M3 Max" and g.unified_memory and g.vendor == "apple"
    assert g.total_bytes == 38654705664  # 36 GiB
    assert g.free_bytes == g.working_set_limit_bytes == 38654705664 * 3 // 4
    assert "estimated" in probe.notes[0]
    (e,) = enrich(probe.gpus)
    assert e.bandwidth_bytes_s == 300e9  # 36 GB M3 Max is the 30-core-GPU, 300 GB/s part


def test_apple_m4_max_64g(tools: Tools) -> None:
    (g,) = enrich(probe_apple(str(tools.sysctl("darwin-sequoia-m4.txt")), metal=None).gpus)
    assert g.total_bytes == 64 * GiB and g.bandwidth_bytes_s == 546e9


def test_apple_m2_16g_two_thirds(tools: Tools) -> None:
    (g,) = probe_apple(str(tools.sysctl("darwin-monterey-m2.txt")), metal=None).gpus
    assert g.free_bytes == 16 * GiB * 2 // 3  # 10922.67 MiB, as llama.cpp logs on 16 GB Macs


def test_apple_wired_limit(tools: Tools) -> None:
    probe = probe_apple(str(tools.sysctl("m1-max-wired.txt")), metal=None)
    (g,) = probe.gpus
    assert g.free_bytes == 26000 * MiB  # llama-server: "MTL0: Apple M1 Max (26000 MiB …)"
    assert "iogpu.wired_limit_mb" in probe.notes[0]


def test_apple_metal_answer_wins(tools: Tools) -> None:
    cap = 52 * GiB  # whatever Metal answers is taken as the cap
    probe = probe_apple(str(tools.sysctl("darwin-sequoia-m4.txt")), metal=lambda: cap)
    assert probe.gpus[0].free_bytes == cap and probe.notes == ()


def test_apple_intel_mac_has_no_metal_gpu(tools: Tools) -> None:
    probe = probe_apple(str(tools.sysctl("darwin-mojave-haswell.txt")), metal=None)
    assert probe.gpus == () and "not Apple Silicon" in probe.notes[0]


# --- Host: /proc/cpuinfo of real machines, and this machine against psutil ------------------


@pytest.mark.parametrize(
    ("recording", "model", "present", "absent"),
    [
        (
            "linux-unknown-sapphirerapids.txt",
            "Intel(R) Xeon(R) Platinum 8480+",
            {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"},
            {"neon"},
        ),
        (
            "linux-rocky8.5-zen4.txt",
            "AMD EPYC 9654 96-Core Processor",
            {"avx2", "avx512f", "avx512_bf16"},
            {"amx_tile", "avx512_fp16"},
        ),
        ("linux-rhel9-neoverse_v2.txt", None, {"neon", "sve2", "i8mm", "bf16"}, {"avx2"}),
    ],
)
def test_cpu_flags(recording: str, model: str | None, present: set[str], absent: set[str]) -> None:
    from toolkit.hardware.host import parse_cpuinfo

    got_model, flags = parse_cpuinfo((FIXTURES / "cpuinfo" / recording).read_text())
    assert got_model == model
    assert present <= set(flags) and not (absent & set(flags))


def test_host_matches_psutil() -> None:
    import os

    import psutil

    from toolkit.hardware.host import probe_host

    host, _ = probe_host()
    assert host.logical_cores == len(os.sched_getaffinity(0))
    if len(os.sched_getaffinity(0)) == psutil.cpu_count(logical=True):
        assert host.physical_cores == psutil.cpu_count(logical=False)
    assert host.ram_total_bytes <= psutil.virtual_memory().total
    assert host.swap_total_bytes == psutil.swap_memory().total
    assert host.disk_free_bytes is not None and host.disk_free_bytes > 0


def test_numa_nodes_from_sysfs_tree(tmp_path: Path) -> None:
    from toolkit.hardware.host import numa_nodes

    for n in (0, 1):
        (tmp_path / f"node{n}").mkdir()
    (tmp_path / "possible").write_text("0-1\n")
    assert numa_nodes(tmp_path) == 2
    assert numa_nodes(tmp_path / "absent") == 1
