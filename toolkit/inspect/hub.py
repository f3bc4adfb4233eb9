"""Read a model on the Hugging Face hub (or a mirror at HF_ENDPOINT) without its weights.

What is fetched, through huggingface_hub's own client and session:
- the repo listing (`list_repo_tree`: names and sizes);
- for a safetensors repo: `config.json` (into the HF cache, like any small file) and the
  safetensors headers via `HfApi.get_safetensors_metadata` (HTTP Range requests on the
  first 100 kB of each shard, a second range when a header is larger; the index JSON when
  the model is sharded);
- for a GGUF repo (or `filename=` naming a .gguf): the header of the file (every part of
  a split file) with Range requests of growing size (1 MiB, 2 MiB, …), never the data.

Offline (`DEPLOY_OFFLINE=1` or `HF_HUB_OFFLINE=1`) nothing goes on the network: the
model is read from the HF cache when a snapshot is there, else NotFound says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import settings
from toolkit.errors import NotFound, UsageError

if TYPE_CHECKING:
    from toolkit.inspect.gguf import GgufModel, ReadAt
    from toolkit.inspect.hf import HfModel

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def _hub_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub import errors

    return (
        errors.RepositoryNotFoundError,
        errors.RevisionNotFoundError,
        errors.EntryNotFoundError,
        errors.GatedRepoError,
    )


def _not_found(repo_id: str, exc: Exception) -> NotFound:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return NotFound(
            f"{repo_id} is gated: access not granted to this token",
            hint="accept the license on the hub page, then set HF_TOKEN",
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return NotFound(f"{repo_id}: revision not found", hint="check --revision")
    if isinstance(exc, errors.EntryNotFoundError):
        return NotFound(f"{repo_id}: file not found ({exc})", hint="check the file name")
    return NotFound(
        f"no model {repo_id!r} on {settings.hf_endpoint()}",
        hint="check the repo id, or: deploy recipes list",
    )


def _range_reader(url: str, headers: dict[str, str]) -> ReadAt:
    from huggingface_hub.utils._http import get_session, hf_raise_for_status

    session = get_session()

    def read_at(offset: int, size: int) -> bytes:
        rng = {"Range": f"bytes={offset}-{offset + size - 1}"}
        with session.stream(
            "GET", url, headers={**headers, **rng}, follow_redirects=True, timeout=30
        ) as response:
            hf_raise_for_status(response)
            out = bytearray()
            for chunk in response.iter_bytes():
                out += chunk
                if len(out) >= size:
                    break
            if response.status_code == 200 and offset:
                raise UsageError(f"{url}: the server ignores Range requests")
        return bytes(out[:size])

    return read_at


def _pick_gguf(repo_id: str, names: list[str], filename: str | None) -> list[str]:
    """The GGUF file (all parts) to read."""
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if filename is not None:
        if filename not in names:
            raise NotFound(f"{repo_id} has no file {filename}", hint="list: deploy pull --list")
        m = _SPLIT.search(filename)
        if m is None:
            return [filename]
        stem = filename[: m.start()]
        count = int(m.group(2))
        return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    firsts = [n for n in ggufs if _SPLIT.search(n) is None or "-00001-of-" in n]
    firsts = [n for n in firsts if "mmproj" not in n.lower()]
    if len(firsts) == 1:
        return _pick_gguf(repo_id, names, firsts[0])
    raise UsageError(
        f"{repo_id} holds {len(firsts)} GGUF files; name one",
        hint="pass the file name (filename=…), e.g. " + ", ".join(firsts[:4]),
    )


def _offline(repo_id: str, revision: str | None, filename: str | None) -> GgufModel | HfModel:
    from huggingface_hub import snapshot_download

    from toolkit.inspect.gguf import read_gguf
    from toolkit.inspect.hf import read_model_dir

    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                local_files_only=True,
                cache_dir=settings.hf_hub_cache(),
            )
        )
    except Exception as exc:
        raise NotFound(
            f"offline and {repo_id} is not in the Hugging Face cache",
            hint="pull it on a connected machine (deploy pull), or unset DEPLOY_OFFLINE",
        ) from exc
    if filename is not None:
        return read_gguf(folder / filename)
    if (folder / "config.json").is_file():
        try:
            return read_model_dir(folder)
        except NotFound:
            # Only config.json (and the index) were cached: plan from the config alone.
            import json

            from toolkit.inspect.hf import hf_model_from

            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            return hf_model_from(repo_id, revision, config, None, ())
    names = [str(p.relative_to(folder)) for p in folder.rglob("*.gguf")]
    return read_gguf(folder / _pick_gguf(repo_id, names, None)[0])


def _is_network_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("httpx", "httpcore")) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def read_hub_model(
    repo_id: str, revision: str | None = None, filename: str | None = None
) -> GgufModel | HfModel:
    """Architecture and exact weight layout of a hub repo from headers only."""
    if settings.offline():
        return _offline(repo_id, revision, filename)
    try:
        return _read_online(repo_id, revision, filename)
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise NotFound(
            f"cannot reach {settings.hf_endpoint()} to read {repo_id}: {exc}",
            hint="check the network or HF_ENDPOINT; offline, set DEPLOY_OFFLINE=1 "
            "to read the Hugging Face cache",
        ) from exc


def _read_online(repo_id: str, revision: str | None, filename: str | None) -> GgufModel | HfModel:
    from huggingface_hub import HfApi, hf_hub_download, hf_hub_url
    from huggingface_hub.utils._headers import build_hf_headers

    endpoint = settings.hf_endpoint()
    api = HfApi(endpoint=endpoint)
    try:
        # model_info first: one request without retries, so a dead endpoint or a missing
        # repo fails at once (the paginated tree listing retries with backoff).
        api.model_info(repo_id, revision=revision)
        listing = list(api.list_repo_tree(repo_id, revision=revision, recursive=True))
    except _hub_errors() as exc:
        raise _not_found(repo_id, exc) from exc
    sizes: dict[str, int | None] = {
        e.path: getattr(e, "size", None) for e in listing if hasattr(e, "size")
    }
    names = list(sizes)
    if filename is not None or (
        "config.json" not in sizes and any(n.endswith(".gguf") for n in names)
    ):
        from toolkit.inspect.gguf import malformed_header, model_from_headers, parse_header

        parts = _pick_gguf(repo_id, names, filename)
        headers_http = build_hf_headers()
        headers = []
        with malformed_header(repo_id):
            for i, name in enumerate(parts):
                url = hf_hub_url(repo_id, name, revision=revision, endpoint=endpoint)
                try:
                    headers.append(parse_header(_range_reader(url, headers_http), part=i))
                except _hub_errors() as exc:
                    raise _not_found(repo_id, exc) from exc
            part_sizes = [sizes.get(n) for n in parts]
            return model_from_headers(headers, [f"{repo_id}/{n}" for n in parts], part_sizes)

    from toolkit.inspect.hf import hf_model_from

    try:
        cfg_path = hf_hub_download(
            repo_id,
            "config.json",
            revision=revision,
            endpoint=endpoint,
            cache_dir=settings.hf_hub_cache(),
        )
    except _hub_errors() as exc:
        raise _not_found(repo_id, exc) from exc
    import json

    config: dict[str, Any] = json.loads(Path(cfg_path).read_text(encoding="utf-8"))
    shards = _safetensors_shards(api, repo_id, revision, names)
    headers_st: list[Any] = []
    for shard in shards:
        try:
            fm = api.parse_safetensors_file_metadata(repo_id, shard, revision=revision)
        except _hub_errors() as exc:
            raise _not_found(repo_id, exc) from exc
        headers_st.append(
            {
                name: {"dtype": t.dtype, "shape": t.shape, "data_offsets": t.data_offsets}
                for name, t in fm.tensors.items()
            }
        )
    files = tuple((f, sizes.get(f)) for f in shards)
    return hf_model_from(repo_id, revision, config, headers_st or None, files)


def _safetensors_shards(
    api: Any, repo_id: str, revision: str | None, names: list[str]
) -> list[str]:
    """The safetensors files that hold the model: the index's shards, else top-level files."""
    import json

    from huggingface_hub import hf_hub_download

    index = "model.safetensors.index.json"
    if index in names:
        try:
            path = hf_hub_download(
                repo_id,
                index,
                revision=revision,
                endpoint=api.endpoint,
                cache_dir=settings.hf_hub_cache(),
            )
        except _hub_errors() as exc:
            raise _not_found(repo_id, exc) from exc
        weight_map = json.loads(Path(path).read_text(encoding="utf-8")).get("weight_map", {})
        return sorted(set(weight_map.values()))
    return sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)
