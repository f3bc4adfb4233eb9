"""Honest measurements under load: busy-machine facts, the ratio to the plan, and the guard
that keeps a busy or slow decode rate out of calibration.

/proc text comes from tests/fixtures/proc/ (recorded on this project's 2-core VM; see the
README there) and reaches the code through the injectable reader, so nothing here loads the
machine. The runs are real run records pointing at the loopback OpenAI server of
tests/test_bench.py, whose pace is known (one token every TOKEN_S), with a sleeping child
as the server's process; the real llama-server path is in tests/test_bench_llamacpp.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.clihelp import run
from tests.test_bench import TOKEN_S, FakeOpenAI
from tests.test_calibration import LLAMA_CPU_TEXT, _plan
from toolkit import calibration as cal
from toolkit.api import bench as api
from toolkit.calibration import busy
from toolkit.planner.types import SpeedEstimate

PROC = Path(__file__).parent / "fixtures" / "proc"
QUIET_LOAD = (PROC / "loadavg-2core-quiet.txt").read_text()
BUSY_LOAD = (PROC / "loadavg-2core-busy.txt").read_text()
STAT_START = (PROC / "stat-2core-start.txt").read_text()
STAT_END = (PROC / "stat-2core-end.txt").read_text()
FAST = 1 / TOKEN_S  # the fake server's decode rate per request (tok/s)


def with_steal(text: str, extra_steal: int) -> str:
    """The recorded /proc/stat with `extra_steal` ticks added to the aggregate steal and
    total (a VM whose hypervisor took that much CPU time since the first sample)."""
    lines = text.splitlines()
    fields = lines[0].split()
    fields[8] = str(int(fields[8]) + extra_steal)
    return "\n".join([" ".join(fields), *lines[1:]]) + "\n"


def reader(loadavg: str, stats: list[str]) -> Callable[[str], str]:
    """A ProcReader replaying recorded files: /proc/stat gives each text in turn."""
    queue = list(stats)

    def read(path: str) -> str:
        if path == "/proc/loadavg":
            return loadavg
        if path == "/proc/stat":
            return queue.pop(0) if len(queue) > 1 else queue[0]
        raise OSError(f"no recorded {path}")

    return read


# ------------------------------------------------------------------------------ parsers


def test_parse_recorded_loadavg_and_stat() -> None:
    assert busy.parse_loadavg(QUIET_LOAD) == 0.96
    assert busy.parse_loadavg(BUSY_LOAD) > 2.0
    start, end = busy.parse_proc_stat(STAT_START), busy.parse_proc_stat(STAT_END)
    # cpu  9394 47654 6388 28613 252 0 96 147 0 0: the first eight summed, steal eighth.
    assert start == busy.CpuTimes(total=9394 + 47654 + 6388 + 28613 + 252 + 0 + 96 + 147,
                                  steal=147, cores=2)  # fmt: skip
    assert end.cores == 2 and end.total > start.total
    # Three quiet seconds on this VM: no steal at all.
    assert busy.steal_percent(start, end) == 0.0
    with pytest.raises(ValueError):
        busy.parse_proc_stat("intr 1 2 3\n")
    with pytest.raises(ValueError):
        busy.parse_loadavg("")


def test_steal_percent_over_the_interval() -> None:
    start = busy.parse_proc_stat(STAT_START)
    stolen = busy.parse_proc_stat(with_steal(STAT_END, 120))
    elapsed = stolen.total - start.total
    assert busy.steal_percent(start, stolen) == pytest.approx(120 / elapsed * 100)
    assert busy.steal_percent(start, start) is None  # no time passed


def test_probe_reads_start_and_end_through_the_reader() -> None:
    probe = busy.LoadProbe(reader(QUIET_LOAD, [STAT_START, STAT_END]), cpu_count=lambda: 64)
    probe.start()
    quiet = probe.finish()
    assert (quiet.load_avg_1m, quiet.cores, quiet.steal_pct) == (0.96, 2, 0.0)
    assert not quiet.busy and quiet.busy_reasons() == ()

    probe = busy.LoadProbe(reader(BUSY_LOAD, [STAT_START, STAT_END]))
    probe.start()
    loaded = probe.finish()
    assert loaded.busy and "load average" in loaded.busy_reasons()[0]
    assert "above 2 cores" in loaded.busy_reasons()[0]

    probe = busy.LoadProbe(reader(QUIET_LOAD, [STAT_START, with_steal(STAT_END, 200)]))
    probe.start()
    stolen = probe.finish()
    assert stolen.steal_pct is not None and stolen.steal_pct > busy.BUSY_STEAL_PCT
    assert stolen.busy and "stolen" in stolen.busy_reasons()[0]
    assert busy.MachineLoad.from_dict(stolen.to_dict()) == stolen


def test_probe_without_proc_is_unknown_not_busy() -> None:
    def nothing(path: str) -> str:
        raise FileNotFoundError(path)

    probe = busy.LoadProbe(nothing, cpu_count=lambda: 8)
    probe.start()
    load = probe.finish()
    assert (load.load_avg_1m, load.cores, load.steal_pct) == (None, 8, None)
    assert not load.busy and load.note and "/proc/loadavg" in load.note


def test_suspect_reasons() -> None:
    quiet = busy.MachineLoad(0.5, 2, 0.0)
    assert busy.suspect_reasons(quiet, 0.9) == ()
    assert busy.suspect_reasons(quiet, None) == ()
    (slow,) = busy.suspect_reasons(quiet, 0.03)
    assert "0.03x" in slow and "0.5x" in slow
    assert len(busy.suspect_reasons(busy.MachineLoad(5.0, 2, 9.0), 0.2)) == 3


# ------------------------------------------------------------------- runs: fake server


@dataclass(frozen=True)
class FakeRun:
    name: str
    server: FakeOpenAI


def _start_run(name: str, srv: FakeOpenAI, decode_estimate: float) -> None:
    """A run record as `deploy up` writes it, for a server at `srv`: its plan estimates
    `decode_estimate` tok/s per request; its log holds a llama.cpp memory report."""
    from toolkit import keys
    from toolkit.runs import process, records
    from toolkit.runs.records import RunRecord

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    _children.append(child)
    rdir = records.run_dir(name)
    rdir.mkdir(parents=True, exist_ok=True)
    log = rdir / "server.log"
    log.write_text(LLAMA_CPU_TEXT + "\n")
    key_file = keys.ensure_key(name)
    srv.key = key_file.read_text().strip()  # the server accepts the run's own key
    from toolkit.hardware.detect import detect

    # Planned for this machine, as `deploy up` does: bench and calibrate key alike.
    plan = replace(
        _plan(source="detected", fingerprint=detect().fingerprint()),
        speed=SpeedEstimate(decode_estimate, decode_estimate * 2, 400.0, "test estimate"),
    )
    records.save(
        RunRecord(
            name=name,
            model="smollm2-135m:q4_1",
            variant_id=plan.variant_id,
            engine="llamacpp-python",  # not "llamacpp": no engine-log tail to read
            engine_version="b7000",
            state="ready",
            host="127.0.0.1",
            port=int(srv.server_address[1]),
            base_url=srv.base_url,
            served_model_name="fake",
            log_file=str(log),
            run_dir=str(rdir),
            argv=("fake",),
            env={},
            started_at=time.time() - 5,
            key_file=str(key_file),
            pid=child.pid,
            pgid=child.pid,
            create_time=process.create_time(child.pid),
            plan=plan.to_dict(),
        )
    )


_children: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAI]:
    srv = FakeOpenAI()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()
    while _children:
        child = _children.pop()
        child.kill()
        child.wait()


OPTS = api.BenchOptions(concurrency=(1,), prompt_tokens=16, output_tokens=12, duration_s=0.3)


def _quiet() -> Callable[[str], str]:
    return reader(QUIET_LOAD, [STAT_START, STAT_END])


def test_quiet_bench_near_the_plan_records_its_decode_rate(
    fake_server: FakeOpenAI,
) -> None:
    _start_run("honest", fake_server, FAST)
    result = api.bench_run("honest", OPTS, proc_reader=_quiet())
    (level,) = result.levels
    assert level.predicted_kind == "per request" and level.predicted_tok_s == FAST
    assert level.decode_tok_s.p50 is not None
    assert level.ratio_to_plan == pytest.approx(level.decode_tok_s.p50 / FAST)
    assert result.ratio_to_plan == level.ratio_to_plan and result.ratio_to_plan > 0.5
    assert result.machine_load == {
        "load_avg_1m": 0.96, "cores": 2, "steal_pct": 0.0, "busy": False, "note": None
    }  # fmt: skip
    assert result.warnings == []
    rec = cal.get_record(result.extra["calibration_record"]).record
    assert rec.decode_tok_s == pytest.approx(level.decode_tok_s.p50)
    # `deploy calibrate` finds that bench and records the same rate without --accept.
    res = run("calibrate", "honest", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["decode_tok_s"] == pytest.approx(level.decode_tok_s.p50)
    assert doc["decode_from"] == result.path and doc["accepted_despite"] == []


def test_slow_bench_is_warned_not_recorded_and_calibrate_refuses(
    fake_server: FakeOpenAI,
) -> None:
    # The plan promised 30x what the server does (a neighbour, or a wrong estimate).
    _start_run("slowrun", fake_server, FAST * 30)
    result = api.bench_run("slowrun", OPTS, proc_reader=_quiet())
    assert result.ratio_to_plan is not None and result.ratio_to_plan < 0.05
    assert any("below 0.5x" in w for w in result.warnings)
    assert any("deploy calibrate slowrun --accept" in w for w in result.warnings)
    assert result.extra["calibration_decode_refused"]
    # Memory is still recorded; the decode rate is not.
    rec = cal.get_record(result.extra["calibration_record"]).record
    assert rec.decode_tok_s is None and rec.devices
    res = run("calibrate", "slowrun")
    assert res.exit_code == 7
    (line,) = res.stderr.strip().splitlines()  # one line: the reason and --accept
    assert "--accept" in line and "below 0.5x" in line
    assert cal.get_record(rec.id).record.decode_tok_s is None
    res = run("calibrate", "slowrun", "--accept", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["decode_tok_s"] == pytest.approx(result.levels[0].decode_tok_s.p50)
    assert any("below 0.5x" in r for r in doc["accepted_despite"])
    stored = json.loads(cal.get_record(rec.id).path.read_text())
    assert stored["accepted_despite"] == doc["accepted_despite"]


def test_busy_machine_bench_warns_and_calibrate_refuses(
    fake_server: FakeOpenAI,
) -> None:
    _start_run("busyrun", fake_server, FAST)
    busy_reader = reader(BUSY_LOAD, [STAT_START, with_steal(STAT_END, 200)])
    result = api.bench_run("busyrun", OPTS, proc_reader=busy_reader)
    assert result.ratio_to_plan is not None and result.ratio_to_plan > 0.5
    assert result.machine_load is not None and result.machine_load["busy"] is True
    assert result.machine_load["load_avg_1m"] > 2 and result.machine_load["cores"] == 2
    assert result.machine_load["steal_pct"] > busy.BUSY_STEAL_PCT
    assert sum("machine busy" in w for w in result.warnings) == 2
    assert cal.get_record(result.extra["calibration_record"]).record.decode_tok_s is None
    res = run("calibrate", "busyrun")
    assert res.exit_code == 7 and "--accept" in res.stderr and "load average" in res.stderr
    # The saved result keeps the facts: `deploy cost` will not take it as measured either.
    saved = api.result_from_dict(json.loads(Path(result.path or "").read_text()))
    assert api.result_suspects(saved) == tuple(result.warnings[:2])


def test_cli_bench_run_prints_ratio_and_warnings(
    fake_server: FakeOpenAI,
) -> None:
    _start_run("clirun", fake_server, FAST * 30)
    args = ["bench", "clirun", "--concurrency", "1", "--prompt-tokens", "16"]
    args += ["--output-tokens", "8", "--duration", "0.2"]
    res = run(*args)
    assert res.exit_code == 0, res.stderr
    assert "measured / plan estimate:" in res.stdout and "x" in res.stdout
    assert "machine: load" in res.stdout and "cores" in res.stdout
    assert "warning:" in res.stdout and "below 0.5x" in res.stdout
    res = run(*args, "--json", "--no-save")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)  # stdout stays JSON; the warnings also go to stderr
    assert doc["ratio_to_plan"] < 0.5 and doc["levels"][0]["ratio_to_plan"] < 0.5
    assert set(doc["machine_load"]) >= {"load_avg_1m", "cores", "steal_pct", "busy"}
    assert "below 0.5x" in res.stderr


def test_calibrate_without_a_bench_records_memory_only(
    fake_server: FakeOpenAI,
) -> None:
    _start_run("membench", fake_server, FAST * 30)
    res = run("calibrate", "membench", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["decode_tok_s"] is None and doc["decode_from"] is None


def test_bench_url_reports_a_busy_machine_without_a_ratio(
    fake_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KEY", fake_server.key)
    result = api.bench_url(
        fake_server.base_url,
        "fake",
        "FAKE_KEY",
        replace(OPTS, save=False),
        proc_reader=reader(BUSY_LOAD, [STAT_START, STAT_END]),
    )
    assert result.ratio_to_plan is None  # no plan to compare with
    assert result.machine_load is not None and result.machine_load["busy"] is True
    assert len(result.warnings) == 1 and "load average" in result.warnings[0]
