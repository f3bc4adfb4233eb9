"""Format × engine × device rules. Each answer names the kernel path or the reason it fails.

- GGUF belongs to llama.cpp (any device llama.cpp builds for); safetensors formats to vLLM.
- vLLM needs an NVIDIA GPU with compute capability ≥ 7.0, an AMD GPU (ROCm), or its CPU
  backend (x86 with AVX2/AVX-512, or Arm). Apple GPUs: llama.cpp (Metal) only.
- bf16 needs cc ≥ 8.0 (below it vLLM runs the weights as float16).
- FP8: native W8A8 at cc ≥ 8.9 (Ada, Hopper, Blackwell); weight-only FP8 Marlin on Ampere
  (8.0–8.7); not below.
- AWQ / GPTQ: Marlin kernels at cc ≥ 8.0; the older AWQ/GPTQ kernels at 7.5–7.9.
- MXFP4: native on datacenter Blackwell (cc 10.x); Triton kernels on Hopper from vLLM
  0.12 (vLLM 0.19 logs "Using 'TRITON' Mxfp4 MoE backend" on an H100), Marlin before;
  Marlin weight-only at 8.0–8.9 and on the other Blackwell parts (cc 11–12: RTX 50xx,
  GB10, Thor; vllm-project/vllm#29339 keeps Triton to SM90 and SM100); AMD: ROCm.
- NVFP4: Blackwell (cc ≥ 10.0).
- vLLM CPU backend: bf16/fp16/fp32 checkpoints only, run as float32 unless compiled
  (bf16 without torch.compile gives wrong output on CPU: never planned).
- MoE-expert offload (`--n-cpu-moe`) needs the native llama-server.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.hardware.model import Gpu, Host


@dataclass(frozen=True)
class Verdict:
    ok: bool
    kernel: str = ""
    reason: str = ""
    #: vLLM --quantization / --dtype to pass, when needed.
    quantization: str | None = None
    dtype: str | None = None


def _cc(gpu: Gpu) -> float | None:
    if gpu.vendor != "nvidia" or not gpu.compute_capability:
        return None
    try:
        return float(gpu.compute_capability)
    except ValueError:
        return None


#: First vLLM release that ships OpenAI's triton_kernels inside vLLM
#: (vllm/third_party/triton_kernels, vllm-project/vllm#28788, merged 2025-11-18), so that
#: Hopper runs MXFP4 MoE layers on them; before, Hopper fell back to Marlin ("Your GPU
#: does not have native support for FP4 computation": vLLM 0.10.1 on an H100 in
#: vllm-project/vllm#23278, and 65.9651 GiB of gpt-oss-120b weights logged by 0.11.0 and
#: 0.11.2, the Marlin layout).
HOPPER_TRITON_MXFP4 = (0, 12, 0)


def mxfp4_moe_kernel(gpu: Gpu, version: tuple[int, ...] | None = None) -> str | None:
    """Which kernel vLLM runs MXFP4 MoE layers through on this GPU (each pads the experts
    its own way, `toolkit.planner.weights.mxfp4_kernel_extra`): "marlin" (weight-only) on
    NVIDIA cc 8.x, on the Blackwell parts other than SM100 (cc ≥ 11: Triton is kept to SM90
    and SM100 by vllm-project/vllm#29339; a GB10 logs 13.72 GiB for gpt-oss-20b, the Marlin
    layout) and on Hopper before vLLM 0.12; "triton" (OpenAI's triton_kernels) on Hopper
    from 0.12 (`version` None: the newest); None elsewhere (SM100's FlashInfer kernels,
    ROCm, unknown GPUs), where the checkpoint's own padding is what is planned."""
    cc = _cc(gpu)
    if cc is None:
        return None
    if 9.0 <= cc < 10.0:
        old = version is not None and tuple(version) < HOPPER_TRITON_MXFP4
        return "marlin" if old else "triton"
    return "marlin" if 8.0 <= cc < 9.0 or cc >= 11.0 else None


def llamacpp_gpu(fmt: str, gpu: Gpu) -> Verdict:
    if fmt != "gguf":
        return Verdict(False, reason=f"llama.cpp loads GGUF files, not {fmt} checkpoints")
    backend = {"nvidia": "CUDA", "amd": "ROCm/HIP", "apple": "Metal", "other": "Vulkan"}
    return Verdict(True, kernel=f"gguf {backend[gpu.vendor]}")


def llamacpp_cpu(fmt: str) -> Verdict:
    if fmt != "gguf":
        return Verdict(False, reason=f"llama.cpp loads GGUF files, not {fmt} checkpoints")
    return Verdict(True, kernel="gguf cpu")


def vllm_gpu(fmt: str, gpu: Gpu) -> Verdict:
    if fmt == "gguf":
        return Verdict(
            False, reason="GGUF is served by llama.cpp (vLLM's GGUF path is not planned)"
        )
    if gpu.vendor == "apple":
        return Verdict(False, reason="vLLM has no Metal backend; use llama.cpp on Apple GPUs")
    if gpu.vendor == "amd":
        if fmt in ("nvfp4",):
            return Verdict(False, reason="NVFP4 needs an NVIDIA Blackwell GPU")
        return Verdict(True, kernel=f"{fmt} rocm")
    if gpu.vendor != "nvidia":
        return Verdict(False, reason=f"vLLM does not support {gpu.name}")
    cc = _cc(gpu)
    if cc is None:
        return Verdict(False, reason=f"compute capability of {gpu.name} unknown")
    if cc < 7.0:
        return Verdict(False, reason=f"vLLM needs compute capability ≥ 7.0 ({gpu.name}: {cc})")
    if fmt == "bf16":
        if cc >= 8.0:
            return Verdict(True, kernel="bf16")
        return Verdict(
            True, kernel="bf16 weights run as fp16 (no bf16 below cc 8.0)", dtype="float16"
        )
    if fmt in ("fp16", "fp32"):
        return Verdict(True, kernel=fmt)
    if fmt == "fp8":
        if cc >= 8.9:
            return Verdict(True, kernel="fp8 w8a8 (native fp8 tensor cores)")
        if cc >= 8.0:
            return Verdict(True, kernel="fp8 marlin weight-only (Ampere)")
        return Verdict(False, reason=f"FP8 needs compute capability ≥ 8.0 ({gpu.name}: {cc})")
    if fmt in ("awq", "gptq"):
        if cc >= 8.0:
            return Verdict(True, kernel=f"{fmt}_marlin", quantization=f"{fmt}_marlin")
        if cc >= 7.5:
            return Verdict(True, kernel=f"{fmt} (non-Marlin, slower)", quantization=fmt)
        return Verdict(False, reason=f"{fmt.upper()} needs compute capability ≥ 7.5 ({cc})")
    if fmt == "int8":
        if cc >= 7.5:
            return Verdict(True, kernel="int8 w8a8")
        return Verdict(False, reason=f"INT8 W8A8 needs compute capability ≥ 7.5 ({cc})")
    if fmt == "mxfp4":
        if cc >= 11.0:
            return Verdict(True, kernel="mxfp4 marlin weight-only (Triton is for SM90/SM100)")
        if cc >= 10.0:
            return Verdict(True, kernel="mxfp4 native (Blackwell)")
        if cc >= 9.0:
            return Verdict(True, kernel="mxfp4 triton kernels (Hopper)")
        if cc >= 8.0:
            return Verdict(True, kernel="mxfp4 marlin weight-only")
        return Verdict(False, reason=f"MXFP4 needs compute capability ≥ 8.0 ({cc})")
    if fmt == "nvfp4":
        if cc >= 10.0:
            return Verdict(True, kernel="nvfp4 native (Blackwell)")
        return Verdict(False, reason=f"NVFP4 needs Blackwell (cc ≥ 10.0); {gpu.name} is {cc}")
    return Verdict(False, reason=f"unknown format {fmt}")


def vllm_cpu(fmt: str, host: Host) -> Verdict:
    if fmt == "gguf":
        return Verdict(False, reason="GGUF cannot be served by vLLM on CPU")
    flags = set(host.cpu_flags)
    arch = (host.arch or "").lower()
    arm = arch in ("aarch64", "arm64")
    if not arm and flags and not ({"avx2", "avx512f"} & flags):
        return Verdict(False, reason="vLLM's CPU backend needs AVX2 or AVX-512 on x86")
    if fmt in ("bf16", "fp16", "fp32"):
        return Verdict(
            True,
            kernel=f"{fmt} weights run as float32, eager (vLLM CPU backend)",
            dtype="float32",
        )
    return Verdict(False, reason=f"{fmt} checkpoints are not planned on vLLM's CPU backend")


__all__ = ["Verdict", "llamacpp_cpu", "llamacpp_gpu", "vllm_cpu", "vllm_gpu"]
