"""Engines: list what is installed, install one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.engines.base import (
    INSTALL_HINT,
    Backend,
    InstalledEngine,
    check_name,
    find_engine,
    list_engines,
)
from toolkit.engines.install import Progress, install_llamacpp
from toolkit.engines.install_python import install_llamacpp_python, install_vllm
from toolkit.errors import UsageError

__all__ = ["engine_rows", "find_engine", "install", "list_engines"]

BACKENDS: dict[str, Backend] = {"cpu": "CPU", "cuda": "CUDA", "metal": "Metal", "rocm": "ROCm"}


def engine_rows() -> list[dict[str, Any]]:
    """One row per engine deploy can use here (installed by deploy, or found on PATH)."""
    rows = []
    for e in list_engines():
        row = e.to_dict()
        row["install_hint"] = INSTALL_HINT[e.name]
        rows.append(row)
    return rows


def install(
    name: str,
    *,
    source: Path | None = None,
    backend: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    cpu: bool | None = None,
    pip_args: tuple[str, ...] = (),
    progress: Progress,
) -> InstalledEngine:
    engine = check_name(name)
    chosen: Backend | None = None
    if backend is not None:
        try:
            chosen = BACKENDS[backend.lower()]
        except KeyError:
            raise UsageError(
                f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}",
                hint=f"deploy engines install {engine} --backend cpu",
            ) from None
    if source is not None and engine != "llamacpp":
        raise UsageError(
            "--source is for building llama-server",
            hint="deploy engines install llamacpp --source DIR|TAR",
        )
    if engine == "llamacpp":
        return install_llamacpp(
            source=source, backend=chosen, jobs=jobs, force=force, progress=progress
        )
    if engine == "llamacpp-python":
        return install_llamacpp_python(
            backend=chosen, force=force, pip_args=pip_args, progress=progress
        )
    if chosen is not None and cpu is None:
        cpu = chosen == "CPU"
    return install_vllm(cpu=cpu, force=force, pip_args=pip_args, progress=progress)
