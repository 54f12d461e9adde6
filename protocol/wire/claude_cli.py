"""The Claude Code CLI as a chat model: argv and prompt out, stream-json events in.

Facts behind the choices are in the reference notes (cli-backends.md) and the golden files
recorded from the real binary in tests/golden/. The CLI takes one prompt, so a conversation is
flattened with explicit role markers; its system prompt is replaced, appended to, or inlined.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

import attrs
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, TransportEvent, Usage
from relaybox.protocol.wire.cli_prompt import flatten


class SystemPromptStrategy(enum.Enum):
    REPLACE = "replace"  # --system-prompt: leanest, but reported to draw extra usage on some plans
    APPEND = "append"  # --append-system-prompt: keeps the CLI's own system prompt
    INLINE = "inline"  # the client's system text goes inside the user prompt


def build_argv(
    executable: str, model: str, system_text: str, strategy: SystemPromptStrategy, *, lean: bool = True
) -> list[str]:
    """The command line for one headless turn; the prompt itself goes to stdin, never argv."""
    argv = [
        executable,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--model",
        model,
        "--no-session-persistence",
    ]
    if lean:
        # No built-in tools, no MCP servers, no settings files: the CLI as a plain chat model.
        argv += ["--tools", "", "--strict-mcp-config", "--setting-sources", ""]
    if system_text and strategy is SystemPromptStrategy.REPLACE:
        argv += ["--system-prompt", system_text]
    elif system_text and strategy is SystemPromptStrategy.APPEND:
        argv += ["--append-system-prompt", system_text]
    elif strategy is SystemPromptStrategy.REPLACE and lean:
        # Without a replacement the CLI sends its own agent prompt (tens of kB) on every call.
        argv += ["--system-prompt", "You are a helpful assistant."]
    return argv


def build_prompt(request: ChatRequest, strategy: SystemPromptStrategy) -> str:
    """The conversation as one prompt for stdin (see `cli_prompt.flatten`)."""
    return flatten(request, inline_system=strategy is SystemPromptStrategy.INLINE)


_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_AUTH_PATTERN = re.compile(
    r"oauth token has expired|not logged in|please run /login|invalid api key|"
    r"authentication_failed|failed to authenticate|invalid bearer token",
    re.IGNORECASE,
)
_LIMIT_PATTERN = re.compile(r"hit your .*limit|usage limit|rate limit|\b429\b", re.IGNORECASE)
_OVERLOAD_PATTERN = re.compile(r"overloaded|\b5\d\d\b|server-side issue|api_error", re.IGNORECASE)


def classify_error(
    text: str,
    *,
    api_status: int | None = None,
    error_code: str | None = None,
    retry_after: float | None = None,
) -> ProviderFailure:
    """A CLI error (result text, assistant error code, or stderr) as a provider failure."""
    message = text.strip()[:500] or "the Claude CLI reported an error without a message"
    if api_status in (401, 403) or error_code == "authentication_failed" or _AUTH_PATTERN.search(text):
        return ProviderFailure(
            FailureKind.AUTH,
            f"Claude CLI is not logged in or its login expired ({message}). "
            "Fix: run `claude /login` (or `claude setup-token` and set CLAUDE_CODE_OAUTH_TOKEN).",
            upstream_status=api_status,
        )
    if api_status == 429 or error_code == "rate_limit" or _LIMIT_PATTERN.search(text):
        return ProviderFailure(
            FailureKind.RATE_LIMITED, message, upstream_status=api_status, retry_after=retry_after
        )
    if api_status is not None and 400 <= api_status < 500:
        return ProviderFailure(FailureKind.REJECTED, message, upstream_status=api_status)
    if (api_status is not None and api_status >= 500) or _OVERLOAD_PATTERN.search(text):
        return ProviderFailure(FailureKind.SERVER_ERROR, message, upstream_status=api_status)
    return ProviderFailure(FailureKind.TRANSPORT, message, upstream_status=api_status)


@attrs.define
class ClaudeStreamDecoder:
    """Turns the CLI's stream-json lines into events; `finish_reason` is set by the result line.

    `now` is the current Unix time, used to turn a rate-limit reset time into seconds.
    """

    now: float = 0.0
    finish_reason: str | None = None
    session_model: str | None = None
    _streamed_text: bool = False
    _error_code: str | None = None
    _resets_at: float | None = None

    def feed(self, line: bytes) -> list[TransportEvent]:
        line = line.strip()
        if not line.startswith(b"{"):
            return []  # noise the CLI prints around its JSON (warnings, banners)
        try:
            event = json.loads(line)
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self.session_model = event.get("model")
        elif kind == "stream_event":
            return self._stream_event(event.get("event") or {})
        elif kind == "assistant":
            # Repeats what the partial messages already streamed; only its error code is new.
            if isinstance(event.get("error"), str):
                self._error_code = event["error"]
            if not self._streamed_text:
                return self._full_message(event.get("message") or {})
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info") or {}
            if info.get("status") == "rejected" and isinstance(info.get("resetsAt"), int | float):
                self._resets_at = float(info["resetsAt"])
        elif kind == "result":
            return self._result(event)
        return []

    def _stream_event(self, event: dict[str, Any]) -> list[TransportEvent]:
        if event.get("type") == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self._streamed_text = True
                return [ContentDelta(delta["text"])]
        return []

    def _full_message(self, message: dict[str, Any]) -> list[TransportEvent]:
        if self._error_code is not None:
            return []
        texts = [b.get("text", "") for b in message.get("content") or () if b.get("type") == "text"]
        text = "".join(texts)
        if text:
            self._streamed_text = True
            return [ContentDelta(text)]
        return []

    def _result(self, event: dict[str, Any]) -> list[TransportEvent]:
        if event.get("is_error") or event.get("subtype") != "success":
            retry_after = None
            if self._resets_at is not None:
                retry_after = max(0.0, self._resets_at - self.now)
            status = event.get("api_error_status")
            raise classify_error(
                str(event.get("result") or event.get("subtype") or ""),
                api_status=status if isinstance(status, int) else None,
                error_code=self._error_code,
                retry_after=retry_after,
            )
        usage = event.get("usage") or {}
        cache_read = int(usage.get("cache_read_input_tokens") or 0)
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        cost = event.get("total_cost_usd")
        self.finish_reason = _STOP_REASONS.get(str(event.get("stop_reason")), "stop")
        return [
            Usage(
                prompt_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
                completion_tokens=int(usage.get("output_tokens") or 0),
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                reported_cost_usd=float(cost) if isinstance(cost, int | float) else None,
            )
        ]
