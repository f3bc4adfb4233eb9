"""Several machines planned as one: a cluster description and its merged hardware.

Spec shorthand (one kind of node, repeated):

    2x[8xh100,ram=2T],net=ib400        two nodes of 8 H100s, InfiniBand 400 Gb/s
    4x[1xrtx4090,ram=64G],net=eth10    four home machines on 10 GbE (llama.cpp RPC)

or a file (YAML):

    network: ib400                     # eth1 eth10 eth25 eth100 roce100 roce200 ib200 ib400
    nodes:
      - {name: head, address: 10.0.0.1, hw: 8xh100,ram=2T}
      - {name: w1, address: 10.0.0.2, hw: ./w1.json}     # `deploy hw --save` on that node

The planner sees the cluster as one machine whose GPUs carry their node (`merged`); the
engine placements keep tensor parallelism inside a node and put pipeline stages (vLLM)
or layer ranges (llama.cpp RPC) across nodes, and the network adds its latency to each
token that crosses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from toolkit.errors import NotFound, UsageError
from toolkit.hardware.model import Gpu, Hardware

#: Link bandwidth (bytes/s) and one-way latency (s) per network name. Latencies are
#: typical small-message figures: RDMA (InfiniBand/RoCE) a few microseconds, TCP over
#: Ethernet tens of microseconds (an estimate; the plan says so).
NETWORKS: dict[str, tuple[float, float]] = {
    "eth1": (1e9 / 8, 100e-6),
    "eth10": (10e9 / 8, 50e-6),
    "eth25": (25e9 / 8, 40e-6),
    "eth100": (100e9 / 8, 30e-6),
    "roce100": (100e9 / 8, 5e-6),
    "roce200": (200e9 / 8, 5e-6),
    "ib200": (200e9 / 8, 3e-6),
    "ib400": (400e9 / 8, 3e-6),
}
_SPEC = re.compile(r"^\s*(\d+)\s*x\s*\[(.+)\]\s*(?:,\s*net\s*=\s*(\w+))?\s*$", re.I)


@dataclass(frozen=True)
class Node:
    name: str
    hw: Hardware
    address: str | None = None


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    network: str
    origin: str

    @property
    def bandwidth(self) -> float:
        return NETWORKS[self.network][0]

    @property
    def latency(self) -> float:
        return NETWORKS[self.network][1]

    def gpus_per_node(self) -> int:
        return min(len(n.hw.gpus) for n in self.nodes)

    def homogeneous(self) -> bool:
        first = [(g.name, g.total_bytes) for g in self.nodes[0].hw.gpus]
        return all([(g.name, g.total_bytes) for g in n.hw.gpus] == first for n in self.nodes)

    def merged(self) -> tuple[Hardware, dict[str, str]]:
        """One Hardware holding every node's GPUs (renumbered), the first node's host,
        and device id → "node/device" labels."""
        gpus: list[Gpu] = []
        labels: dict[str, str] = {}
        for node in self.nodes:
            for g in node.hw.gpus:
                merged = replace(g, index=len(gpus), physical_index=None)
                labels[merged.device_id] = f"{node.name}/{g.device_id}"
                gpus.append(merged)
        head = self.nodes[0].hw
        labels["cpu"] = f"{self.nodes[0].name}/cpu"
        return replace(head, gpus=tuple(gpus), origin=self.origin, source="spec"), labels


def _network(name: str | None, where: str) -> str:
    net = (name or "eth10").lower()
    if net not in NETWORKS:
        raise UsageError(
            f"{where}: unknown network {name!r}",
            hint="one of: " + ", ".join(NETWORKS),
        )
    return net


def parse_cluster(spec: str) -> Cluster:
    """A cluster from a spec (`2x[8xh100,ram=2T],net=ib400`) or a YAML file."""
    from toolkit.hardware.profile import load_hardware

    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        return _from_file(path)
    m = _SPEC.match(spec)
    if m is None:
        raise UsageError(
            f"cluster {spec!r}: expected N x [HW],net=NAME or a cluster file",
            hint="e.g. --cluster '2x[8xh100,ram=2T],net=ib400'",
        )
    count = int(m.group(1))
    if not 1 <= count <= 256:
        raise UsageError(f"cluster {spec!r}: 1 to 256 nodes")
    hw = load_hardware(m.group(2))
    nodes = tuple(Node(f"node{i}", hw) for i in range(count))
    return Cluster(nodes, _network(m.group(3), spec), spec)


def _from_file(path: Path) -> Cluster:
    import yaml

    from toolkit.hardware.profile import load_hardware

    if not path.exists():
        raise NotFound(f"no cluster file {path}", hint="write one (docs/cluster.md)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise UsageError(f"{path}: a cluster file lists `nodes:` (each with hw:)")
    nodes = []
    for i, item in enumerate(doc["nodes"]):
        if not isinstance(item, dict) or "hw" not in item:
            raise UsageError(f"{path}: nodes[{i}] needs hw: (a spec or a profile file)")
        unknown = set(item) - {"name", "hw", "address"}
        if unknown:
            raise UsageError(f"{path}: nodes[{i}]: unknown key {sorted(unknown)[0]!r}")
        hw_text = str(item["hw"])
        hw_path = (path.parent / hw_text).expanduser()
        hw = load_hardware(str(hw_path) if hw_path.exists() else hw_text)
        nodes.append(Node(str(item.get("name") or f"node{i}"), hw, item.get("address")))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: node names must differ")
    return Cluster(tuple(nodes), _network(doc.get("network"), str(path)), str(path))
