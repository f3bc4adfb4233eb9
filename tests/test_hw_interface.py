"""The contract other commands code against: load_hardware() and the --hw option."""

from __future__ import annotations

import json

import pytest

from tests.clihelp import run
from toolkit.errors import UsageError
from toolkit.hardware.profile import load_hardware
from toolkit.units import GiB


def test_spec_two_3090s() -> None:
    hw = load_hardware("2xrtx3090,ram=128G")
    assert [g.total_bytes for g in hw.gpus] == [24 * GiB, 24 * GiB]
    assert all(g.free_bytes == g.total_bytes for g in hw.gpus)
    assert hw.host.ram_total_bytes == 128 * GiB
    assert hw.source == "spec"


def test_deploy_hw_json_spec() -> None:
    res = run("hw", "--hw", "2xrtx3090,ram=128G", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [g["total_bytes"] for g in doc["gpus"]] == [24 * GiB] * 2
    assert all(g["bandwidth_bytes_s"] == 936e9 for g in doc["gpus"])
    assert doc["host"]["ram_total_bytes"] == 128 * GiB


def test_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_HW", "cpu,ram=24G,cores=2")
    hw = load_hardware(None)
    assert hw.gpus == () and hw.host.physical_cores == 2 and hw.source == "spec"


def test_bad_spec_is_usage_error() -> None:
    with pytest.raises(UsageError, match="'3xnope'"):
        load_hardware("3xnope")
    res = run("hw", "--hw", "3xnope")
    assert res.exit_code == 2 and "3xnope" in res.stderr
