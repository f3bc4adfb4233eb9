"""A terminal chat on any OpenAI-compatible endpoint: streaming, history, commands.

    you> What is the capital of France?
    Paris is the capital of France.
    you> /model code           (switch the model: an alias of a stack, or any listed id)
    you> /models               (what the endpoint lists)
    you> /reset                (forget the conversation)
    you> (a line of three double quotes starts and ends a multi-line message)
    you> /exit                 (or Ctrl-D; Ctrl-C stops an answer, twice at the prompt quits)

Talks HTTP itself (httpx, server-sent events), so it needs no client library; the key is
read from a file and sent only in the Authorization header.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from toolkit import sse
from toolkit.errors import EngineError

QUOTES = '"' * 3
HELP = (
    "commands: /model NAME  /models  /reset  /system TEXT  /exit   "
    f"({QUOTES} on a line starts and ends a multi-line message)"
)


@dataclass
class Session:
    base_url: str
    key: str | None
    model: str
    history: list[dict[str, str]] = field(default_factory=list)
    system: str | None = None
    max_tokens: int = 512
    temperature: float | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def models(self) -> list[str]:
        r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=30)
        if r.status_code == 401:
            raise EngineError("the server refused the key (401)", hint="check --key-file")
        r.raise_for_status()
        return [str(m.get("id")) for m in r.json().get("data", [])]

    def _stream(self, body: dict[str, Any], pieces: list[str]) -> Iterator[str]:
        with httpx.stream(
            "POST",
            f"{self.base_url}/chat/completions",
            json=body,
            headers=self._headers(),
            timeout=httpx.Timeout(600, connect=10),
        ) as r:
            if r.status_code != 200:
                r.read()
                raise EngineError(f"HTTP {r.status_code}: {r.text[:300]}")
            for line in r.iter_lines():
                chunk = sse.event(line)
                if chunk is None:
                    continue
                if chunk is sse.DONE:
                    return
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        pieces.append(delta)
                        yield delta

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def ask(self, text: str) -> Iterator[str]:
        """Send `text` with the history; yield the answer's pieces as they stream in. The
        exchange joins the history only when the answer completed."""
        self.history.append({"role": "user", "content": text})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(),
            "stream": True,
            "max_tokens": self.max_tokens,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        pieces: list[str] = []
        done = False
        try:
            for attempt in range(2):
                try:
                    yield from self._stream(body, pieces)
                    break
                except (httpx.RemoteProtocolError, httpx.ConnectError):
                    # A server may close a kept-alive connection as a request arrives on
                    # it (llama-server's router now and then): once, on a new one.
                    if pieces or attempt:
                        raise
            done = True
        finally:
            if done:
                self.history.append({"role": "assistant", "content": "".join(pieces)})
            else:
                self.history.pop()  # an interrupted exchange is not kept


def read_message(prompt: Callable[[str], str]) -> str | None:
    """One message from the user: a line, or the lines between two lines of three double
    quotes. None at EOF."""
    try:
        line = prompt("you> ")
    except EOFError:
        return None
    if line.strip() != QUOTES:
        return line
    lines: list[str] = []
    while True:
        try:
            more = prompt("...> ")
        except EOFError:
            break
        if more.strip() == QUOTES:
            break
        lines.append(more)
    return "\n".join(lines)


def run(
    session: Session,
    *,
    prompt: Callable[[str], str] = input,
    write: Callable[[str], None],
) -> None:
    """The read-answer loop (prompt and write are the terminal; tests pass their own)."""
    write(f"chat with {session.model} at {session.base_url} — {HELP}\n")
    interrupted = False
    while True:
        try:
            text = read_message(prompt)
        except KeyboardInterrupt:
            if interrupted:
                write("\n")
                return
            interrupted = True
            write("\n(Ctrl-C again to quit)\n")
            continue
        interrupted = False
        if text is None:
            write("\n")
            return
        cmd = text.strip()
        if not cmd:
            continue
        if cmd in ("/exit", "/quit"):
            return
        if cmd == "/help":
            write(HELP + "\n")
            continue
        if cmd == "/reset":
            session.history.clear()
            write("(history cleared)\n")
            continue
        if cmd == "/models":
            write("  ".join(session.models()) + "\n")
            continue
        if cmd.startswith("/system"):
            session.system = cmd[len("/system") :].strip() or None
            write(f"(system prompt {'set' if session.system else 'cleared'})\n")
            continue
        if cmd.startswith("/model"):
            name = cmd[len("/model") :].strip()
            listed = session.models()
            if name not in listed:
                write(f"(no model {name!r}; the server lists: {', '.join(listed)})\n")
                continue
            session.model = name
            write(f"(now talking to {name}; history kept)\n")
            continue
        if cmd.startswith("/"):
            write(f"(unknown command {cmd.split()[0]}; {HELP})\n")
            continue
        try:
            for piece in session.ask(text):
                write(piece)
        except KeyboardInterrupt:
            write("\n(stopped)\n")
            continue
        except (httpx.HTTPError, EngineError) as exc:
            write(f"\n(error: {exc})\n")
            continue
        write("\n")
