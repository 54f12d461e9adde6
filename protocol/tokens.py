"""Offline token counting (bpe-openai's o200k vocabulary, shipped in the wheel: no download).

Exact for recent OpenAI models; an estimate for others, whose tokenizers are not public.
"""

from __future__ import annotations

import functools

import bpe_openai
from relaybox.protocol.chat import ChatMessage, ChatRequest, EmbeddingRequest

# Per-message framing tokens, as OpenAI counts them.
_PER_MESSAGE = 3


@functools.cache
def _encoding() -> bpe_openai.Encoding:
    return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    return len(_encoding().encode(text)) if text else 0


def count_message(message: ChatMessage) -> int:
    total = _PER_MESSAGE + count_text(message.text())
    for call in message.tool_calls:
        total += count_text(call.name) + count_text(call.arguments)
    return total


def count_request(request: ChatRequest) -> int:
    total = 3 + sum(count_message(message) for message in request.messages)
    for tool in request.tools:
        total += count_text(tool.name) + count_text(tool.description or "") + count_text(str(tool.parameters))
    return total


def lower_bound(request: ChatRequest) -> int:
    """A cheap lower bound on the prompt's tokens (about four characters a token for prose, fewer
    for code): a request above a model's window by this count is certainly too long for it."""
    chars = sum(len(m.text()) for m in request.messages)
    chars += sum(len(c.arguments) for m in request.messages for c in m.tool_calls)
    return chars // 4


def high_estimate(request: ChatRequest) -> int:
    """A cheap estimate of the prompt's tokens on the high side: twice the lower bound, plus the
    framing each message costs and its last, partial token (most of a short message's tokens).
    What a budget holds before the upstream says; text in scripts of about a token a character
    can still exceed it."""
    return 2 * lower_bound(request) + 3 + (_PER_MESSAGE + 1) * len(request.messages)


def count_inputs(request: EmbeddingRequest) -> int:
    """An embeddings request's tokens: its texts counted, its token ids as given."""
    return sum(count_text(item) if isinstance(item, str) else len(item) for item in request.inputs)
