"""Planning over several machines (`deploy plan --cluster`): the spec shorthand and the
cluster file, TP kept inside a node with one pipeline stage per node (vLLM), layer ranges
across nodes (llama.cpp RPC), devices named by node, and the honest no-fit answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clihelp import run
from toolkit.api.plan import make_plans
from toolkit.cluster import parse_cluster
from toolkit.errors import UsageError
from toolkit.planner.types import PlanRequest


def test_spec_and_file(tmp_path: Path) -> None:
    cl = parse_cluster("2x[8xh100,ram=2T],net=ib400")
    assert [n.name for n in cl.nodes] == ["node0", "node1"] and cl.network == "ib400"
    assert cl.gpus_per_node() == 8 and cl.homogeneous()
    hw, labels = cl.merged()
    assert len(hw.gpus) == 16 and labels["cuda:9"] == "node1/cuda:1"
    f = tmp_path / "cluster.yaml"
    f.write_text(
        "network: eth10\nnodes:\n"
        "  - {name: head, address: 10.0.0.1, hw: '1xrtx4090,ram=64G'}\n"
        "  - {name: w1, address: 10.0.0.2, hw: '1xrtx3090,ram=32G'}\n"
    )
    cl = parse_cluster(str(f))
    assert [n.name for n in cl.nodes] == ["head", "w1"] and not cl.homogeneous()
    for bad, message in [
        ("2x[8xh100],net=wifi", "unknown network"),
        ("two nodes", "or a cluster file"),
        ("0x[1xh100]", "1 to 256 nodes"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_cluster(bad)
    f.write_text("nodes:\n  - {name: a, hw: '1xh100', colour: red}\n")
    with pytest.raises(UsageError, match="unknown key 'colour'"):
        parse_cluster(str(f))


def test_vllm_pipeline_across_nodes_tp_inside() -> None:
    res = make_plans("qwen3-coder-480b-a35b:bf16", cluster="2x[8xh100,ram=2T],net=ib400")
    p = res.plans[0]
    assert p.vllm is not None
    assert (p.vllm.tensor_parallel, p.vllm.pipeline_parallel) == (8, 2)
    nodes = {d.id.split("/")[0] for d in p.memory}
    assert nodes == {"node0", "node1"}
    assert any("one pipeline stage per node" in n for n in p.notes)
    # 894 GiB of bf16 does not fit one node of 8 H100s: the plan needs both.
    one = make_plans("qwen3-coder-480b-a35b:bf16", PlanRequest(), hw="8xh100,ram=2T")
    assert not one.plans


def test_rpc_split_and_no_fit() -> None:
    res = make_plans("llama-3.3-70b", PlanRequest(engine="llamacpp"),
                     cluster="4x[1xrtx4090,ram=64G],net=eth10")  # fmt: skip
    p = res.plans[0]
    assert p.placement == "layer_split" and len(p.llamacpp.tensor_split) == 4  # type: ignore[union-attr]
    assert any("rpc-server" in n for n in p.notes)
    small = run("plan", "deepseek-r1", "--cluster", "2x[1xrtx4090,ram=64G],net=eth10")
    assert small.exit_code == 3 and "nothing fits" in small.stderr
    both = run("plan", "deepseek-r1", "--cluster", "2x[1xh100]", "--hw", "1xh100")
    assert both.exit_code == 2
