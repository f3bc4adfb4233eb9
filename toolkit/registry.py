"""Container image references pinned to digests, through the registry's own API.

A tag (`vllm/vllm-openai:v0.34.0`) is mutable: the registry may point it at another
image tomorrow, and a manifest that names it runs whatever is there then. A digest
(`…@sha256:…`) names one image forever. `pin` asks the registry which digest a tag
points at now, over the OCI distribution API every registry speaks (Docker Hub, ghcr.io,
a private mirror): `HEAD /v2/<name>/manifests/<tag>`, answered with the
`Docker-Content-Digest` header. A registry that wants a token says so in a 401's
`WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the anonymous token from that realm
is enough for public images (no credentials are read or sent).

The digest is the one of what the tag points at: for a multi-platform image that is the
index, so every node pulls its own platform's image from one pinned reference.

Plain HTTP only for a registry on this machine's loopback (Docker trusts 127.0.0.0/8 the
same way); everything else over HTTPS with certificate checks.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from toolkit.errors import UsageError

#: What a manifest request accepts: OCI and Docker, single images and indexes.
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DOCKER_HUB = "registry-1.docker.io"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MIRROR = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(:\d{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$")


@dataclass(frozen=True)
class Ref:
    """An image reference split the way registries read it."""

    #: As written, "" for Docker Hub's implied docker.io.
    host: str
    repo: str
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB if self.host in ("", "docker.io", "index.docker.io") else self.host

    @property
    def api_repo(self) -> str:
        if self.api_host == DOCKER_HUB and "/" not in self.repo:
            return f"library/{self.repo}"
        return self.repo

    def __str__(self) -> str:
        text = f"{self.host}/{self.repo}" if self.host else self.repo
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(ref: str) -> Ref:
    """`[host[:port]/]repo[:tag][@sha256:…]`; no tag and no digest means `latest`."""
    text = ref.strip()
    if not text or any(c.isspace() for c in text):
        raise UsageError(f"{ref!r} is not an image reference", hint="e.g. vllm/vllm-openai:v0.34.0")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise UsageError(
                f"{ref!r}: a digest is sha256: and 64 hex digits",
                hint="copy it from `docker buildx imagetools inspect IMAGE`",
            )
    host = ""
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, text = first, rest
    tag = None
    if ":" in text.rsplit("/", 1)[-1]:
        text, tag = text.rsplit(":", 1)
    if not text or not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", text):
        raise UsageError(
            f"{ref!r}: bad repository name {text!r}", hint="lowercase, e.g. vllm/vllm-openai"
        )
    if tag is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise UsageError(f"{ref!r}: bad tag {tag!r}")
    if tag is None and digest is None:
        tag = "latest"
    return Ref(host, text, tag, digest)


def mirror(ref: str, registry: str) -> str:
    """The same image in a private registry: `registry/` + the path without the host
    (`ghcr.io/ggml-org/llama.cpp:server` → `mirror:5000/ggml-org/llama.cpp:server`)."""
    r = parse(ref)
    host = registry.strip().rstrip("/")
    if "://" in host or not _MIRROR.fullmatch(host):
        raise UsageError(
            f"--registry {registry!r}: give a host[:port][/path], no scheme",
            hint="e.g. --registry registry.internal:5000/mirror",
        )
    return str(Ref(host, r.repo, r.tag, r.digest))


def pin(ref: str, *, timeout: float = 20.0) -> str:
    """`ref` with the digest its tag points at now appended (a reference that already has
    a digest is returned as it is). UsageError says what went wrong and what to do."""
    r = parse(ref)
    if r.digest:
        return str(r)
    scheme = "http" if _LOOPBACK.match(r.api_host) else "https"
    url = f"{scheme}://{r.api_host}/v2/{r.api_repo}/manifests/{r.tag}"
    fix = "pass --image IMAGE@sha256:DIGEST, or --no-pin to keep the tag"
    try:
        digest = _manifest_digest(url, r, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise UsageError(f"{r.api_host} has no {r.api_repo}:{r.tag}", hint=fix) from None
        raise UsageError(f"{r.api_host} answered {e.code} for {r}", hint=fix) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", e)
        raise UsageError(f"cannot pin {r} to a digest: {r.api_host}: {why}", hint=fix) from None
    return str(Ref(r.host, r.repo, r.tag, digest))


def _manifest_digest(url: str, r: Ref, timeout: float) -> str:
    token = None
    for _ in range(2):
        req = urllib.request.Request(url, method="HEAD", headers={"Accept": ACCEPT})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                digest = resp.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as e:
            if e.code == 401 and token is None:
                token = _token(e.headers.get("WWW-Authenticate", ""), r, timeout)
                continue
            raise
        if digest is None:
            # Registries may leave the header out of a HEAD answer: hash the manifest.
            get = urllib.request.Request(url, headers={"Accept": ACCEPT})
            if token:
                get.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(get, timeout=timeout) as resp:
                digest = "sha256:" + hashlib.sha256(resp.read()).hexdigest()
        if not _DIGEST.match(digest):
            raise ValueError(f"the registry gave {digest!r}, not a sha256 digest")
        return str(digest)
    raise ValueError("the registry refused the token it issued")


def _token(challenge: str, r: Ref, timeout: float) -> str:
    """An anonymous pull token from the realm a 401 names."""
    scheme, _, params = challenge.partition(" ")
    if scheme.lower() != "bearer":
        raise ValueError(f"the registry wants {scheme or 'credentials'} authentication")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
    realm = fields.pop("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise ValueError(f"the registry's token realm {realm!r} is not a URL")
    if realm.startswith("http://") and not _LOOPBACK.match(urllib.parse.urlsplit(realm).netloc):
        raise ValueError(f"the registry's token realm {realm} is not HTTPS")
    fields.setdefault("scope", f"repository:{r.api_repo}:pull")
    url = f"{realm}?{urllib.parse.urlencode(fields)}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("the registry's token answer has no token")
    return token


__all__ = ["Ref", "mirror", "parse", "pin"]
