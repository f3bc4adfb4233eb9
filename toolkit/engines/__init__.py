"""Inference engines: find what is installed, install, and render a Plan to argv/env.

from toolkit.engines import build_launch, find_engine
launch = build_launch(plan, find_engine("llamacpp"), model_path=..., host="127.0.0.1",
                      port=8080, api_key_file=key, run_dir=run)
subprocess.Popen(launch.argv, env=launch.process_env(), ...)
"""

from toolkit.engines.base import (
    ENGINE_NAMES,
    INSTALL_HINT,
    Backend,
    EngineName,
    InstalledEngine,
    Launch,
    TlsFiles,
    build_launch,
    find_engine,
    list_engines,
    private_env,
)

__all__ = [
    "ENGINE_NAMES",
    "INSTALL_HINT",
    "Backend",
    "EngineName",
    "InstalledEngine",
    "Launch",
    "TlsFiles",
    "build_launch",
    "find_engine",
    "list_engines",
    "private_env",
]
