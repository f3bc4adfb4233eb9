"""`deploy chat` under a pseudo-terminal against the real llama-server: streaming answers,
history, /reset, /model, /models, a multi-line message, errors, and quitting."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp]


class Terminal:
    """A child process on a pty: type lines, wait for text."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {text!r}; screen:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if not data and self.proc.poll() is not None:
                    raise AssertionError(f"exited before {text!r}:\n{self.seen[-2000:]}")
                self.seen += data.decode(errors="replace")
        start = self.seen.index(text)
        out, self.seen = self.seen[: start + len(text)], self.seen[start + len(text) :]
        return out

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\r").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(20)
        finally:
            os.close(self.master)


def test_chat_in_a_terminal(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path, isolated_env: Path
) -> None:
    res = run("up", str(smollm2_gguf), "--ctx", "2048", "--name", "talk", "--llama-server",
              str(llama_server.path), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    env = {**os.environ, "DEPLOY_HOME": str(isolated_env), "TERM": "dumb"}
    term = Terminal([sys.executable, "-m", "toolkit", "chat", "talk", "--temperature", "0",
                     "--max-tokens", "24"], env)  # fmt: skip
    try:
        term.expect("you> ")
        term.send("What is the capital of France? Answer in one short sentence.")
        answer = term.expect("you> ")
        assert "Paris" in answer, answer
        term.send("/models")
        assert json.loads(res.stdout)["served_model_name"] in term.expect("you> ")
        term.send("/model no-such-model")
        assert "no model 'no-such-model'" in term.expect("you> ")
        term.send('"""')
        term.expect("...> ")
        term.send("Say the word")
        term.expect("...> ")
        term.send("hello.")
        term.expect("...> ")
        term.send('"""')
        assert term.expect("you> ").strip()
        term.send("/reset")
        assert "history cleared" in term.expect("you> ")
        term.send("/bogus")
        assert "unknown command /bogus" in term.expect("you> ")
        term.send("/exit")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        run("stop", "talk")


def test_history_is_sent_and_reset_forgets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """What each request carries, with the HTTP layer replaced by a recorder."""
    from toolkit import chat

    sent: list[list[dict[str, str]]] = []

    def fake_ask(self: chat.Session, text: str) -> Any:
        self.history.append({"role": "user", "content": text})
        sent.append(list(self.messages()))
        self.history.append({"role": "assistant", "content": f"echo {text}"})
        yield f"echo {text}"

    monkeypatch.setattr(chat.Session, "ask", fake_ask)
    lines = iter(["one", "two", "/reset", "three", "/exit"])
    out: list[str] = []
    s = chat.Session("http://127.0.0.1:9/v1", "k" * 20, "m", system=None)
    chat.run(s, prompt=lambda _p: next(lines), write=out.append)
    assert [len(m) for m in sent] == [1, 3, 1]
    assert sent[1][0]["content"] == "one" and sent[2][0]["content"] == "three"
