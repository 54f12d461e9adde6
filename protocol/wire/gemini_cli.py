"""The Gemini CLI as a chat model: argv and workspace settings out, stream-json events in.

Measured with gemini-cli 0.61 against a fake Gemini API (tests/golden/gemini_cli_*.jsonl): with
its defaults the CLI sends ~31 kB per request (23 kB system prompt, 7 kB of tool declarations)
and retries 429 and 5xx up to 10 times; relaybox's workspace settings (no core tools, no context
file, one attempt) and a one-line system prompt bring that to ~0.8 kB and one attempt.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, TransportEvent, Usage

# Written to `.gemini/settings.json` in relaybox's own working directory for the CLI.
WORKSPACE_SETTINGS = {
    "general": {"maxAttempts": 1},  # relaybox falls back itself; CLI retries only delay that
    "tools": {"core": ["__relaybox_no_tools__"]},  # no built-in tools: the CLI as a plain chat model
    "context": {"fileName": "__relaybox_no_context__.md"},  # no GEMINI.md memory files
}
SYSTEM_PROMPT = "You are a helpful assistant."

EXIT_CODES = {
    41: (
        FailureKind.AUTH,
        "Gemini CLI authentication failed. Fix: run `gemini` once and log in, or set GEMINI_API_KEY",
    ),
    42: (FailureKind.REJECTED, "the Gemini CLI rejected its input"),
    52: (FailureKind.TRANSPORT, "the Gemini CLI's configuration is invalid"),
    53: (FailureKind.REJECTED, "the Gemini CLI hit its turn limit"),
    55: (FailureKind.TRANSPORT, "the Gemini CLI does not trust its working directory"),
}


def build_argv(executable: str, model: str) -> list[str]:
    """Headless, stream-json output; the prompt itself is written to stdin (`-p ""` appends nothing)."""
    return [executable, "-p", "", "-m", model, "-o", "stream-json"]


_AUTH = re.compile(
    r"\b401\b|UNAUTHENTICATED|API key not valid|PERMISSION_DENIED|\b403\b|login", re.IGNORECASE
)
_LIMIT = re.compile(r"\b429\b|RESOURCE_EXHAUSTED|exhausted|quota", re.IGNORECASE)
_SERVER = re.compile(r"\b5\d\d\b|UNAVAILABLE|INTERNAL|overloaded", re.IGNORECASE)
_REJECTED = re.compile(r"\b400\b|INVALID_ARGUMENT", re.IGNORECASE)


def classify_error(text: str) -> ProviderFailure:
    message = text.strip()[:500] or "the Gemini CLI reported an error without a message"
    if _AUTH.search(text):
        return ProviderFailure(
            FailureKind.AUTH,
            f"Gemini CLI is not authenticated ({message}). Fix: run `gemini` "
            "and log in, or configure an API key",
        )
    if _LIMIT.search(text):
        return ProviderFailure(FailureKind.RATE_LIMITED, message)
    if _SERVER.search(text):
        return ProviderFailure(FailureKind.SERVER_ERROR, message)
    if _REJECTED.search(text):
        return ProviderFailure(FailureKind.REJECTED, message)
    return ProviderFailure(FailureKind.TRANSPORT, message)


def classify_exit(code: int | None, stderr: str) -> ProviderFailure:
    if code in EXIT_CODES:
        kind, message = EXIT_CODES[code]
        tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        return ProviderFailure(kind, message + (f" ({tail[0][:200]})" if tail else ""))
    if stderr.strip():
        return classify_error(stderr)
    return ProviderFailure(FailureKind.TRANSPORT, f"the Gemini CLI exited with code {code} without an answer")


@attrs.define
class GeminiStreamDecoder:
    finish_reason: str | None = None
    session_model: str | None = None

    def feed(self, line: bytes) -> list[TransportEvent]:
        line = line.strip()
        if not line.startswith(b"{"):
            return []  # noise lines ("Warning: 256-color support not detected", ...)
        try:
            event: Any = json.loads(line)
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "init":
            self.session_model = event.get("model")
        elif kind == "message" and event.get("role") == "assistant" and event.get("content"):
            return [ContentDelta(str(event["content"]))]
        elif kind == "result":
            if event.get("status") != "success":
                error = event.get("error") or {}
                raise classify_error(str(error.get("message") if isinstance(error, dict) else error))
            stats = event.get("stats") or {}
            self.finish_reason = "stop"
            cached = int(stats.get("cached") or 0)
            return [
                Usage(
                    int(stats.get("input_tokens") or 0),
                    int(stats.get("output_tokens") or 0),
                    cache_read_tokens=cached,
                )
            ]
        return []
