"""A provider's connection test: one live request of a few tokens, pinned to it (no fallback),
logged with status `test` (not routing evidence, not the client's traffic), and on failure a
diagnosis. The dashboard's "Test connection" and `relaybox doctor` ask it."""

from __future__ import annotations

import uuid

import attrs
import trio
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.errors import RelayError
from relaybox.web.config import ProviderConfig
from relaybox.web.diagnosis import diagnose
from relaybox.web.dispatch import dispatch
from relaybox.web.system import System


@attrs.frozen
class ConnectionCheck:
    ok: bool
    diagnosis: str  # starts with ✅ or ❌
    detail: str = ""  # relaybox's own error text, when it failed
    answer: str = ""
    latency_ms: int = 0


async def check_connection(
    system: System, config: ProviderConfig, client: str, within: float
) -> ConnectionCheck:
    chat = ChatRequest(
        model=f"{config.name}:{config.default_model}",
        max_tokens=16,
        messages=(ChatMessage("user", "Reply with the single word OK."),),
    )
    started = trio.current_time()
    try:
        with trio.fail_after(within):
            begun = await dispatch(system, chat, f"test-{uuid.uuid4().hex}", client, purpose="test")
            answer = await begun.collect()
    except RelayError as error:
        return ConnectionCheck(False, diagnose(config, error.message), error.message)
    except trio.TooSlowError:
        return ConnectionCheck(False, diagnose(config, "timeout"), f"no answer within {within:g} s")
    latency = round((trio.current_time() - started) * 1000)
    return ConnectionCheck(
        True,
        f"✅ Connected! {config.name}/{config.default_model} answered in {latency} ms.",
        answer=answer.text[:200],
        latency_ms=latency,
    )
