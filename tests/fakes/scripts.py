"""What a fake upstream does with its next request: answer, stall, fail, or break mid-stream."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from tests.fakes.http_server import ResponseWriter


@attrs.define
class Reply:
    text: str = "Hello from the fake upstream."
    # Streaming: the text is cut into this many pieces (at least one), sent `chunk_delay` apart.
    pieces: int = 4
    chunk_delay: float = 0.0
    # Wait before the status line goes out.
    delay: float = 0.0
    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    error_message: str = "fake upstream error"
    # Never answer at all (for timeouts).
    stall: bool = False
    # After this many pieces: reset the connection / send garbage / stop sending but keep open.
    reset_after: int | None = None
    garbage_after: int | None = None
    # After this many pieces: a well-formed frame whose JSON has the wrong shape (a string for an
    # object), then the stream goes on.
    wrong_shape_after: int | None = None
    stall_after: int | None = None
    # After this many pieces: the response ends cleanly, without its closing frames (truncated).
    end_after: int | None = None
    prompt_tokens: int = 11
    completion_tokens: int = 7
    tool_call: tuple[str, str] | None = None  # (name, json arguments)
    tool_pieces: int = 6  # streamed tool-call arguments are cut into this many fragments
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def split_text(text: str, pieces: int) -> list[str]:
    pieces = max(1, min(pieces, len(text) or 1))
    size, extra = divmod(len(text), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


class ReplyQueue:
    """Scripted replies for the next requests; the default reply once the script runs out."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self._queue: list[Reply] = []

    def push(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    def next(self) -> Reply:
        return self._queue.pop(0) if self._queue else self.default


# A fault menu: (weight, how to draw that reply from the generator).
FaultMenu = Sequence[tuple[float, Callable[[random.Random], Reply]]]


class SeededFaults(ReplyQueue):
    """Replies drawn at random from a menu, by a seeded generator, until `calm()` (then the
    default reply); a pushed script still goes first."""

    def __init__(self, menu: FaultMenu, seed: int) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self._draws = [draw for _, draw in menu]
        self._weights = [weight for weight, _ in menu]
        self.stormy = True

    def calm(self) -> None:
        self.stormy = False

    def next(self) -> Reply:
        if self._queue or not self.stormy:
            return super().next()
        (draw,) = self._rng.choices(self._draws, self._weights)
        return draw(self._rng)


async def before_piece(
    reply: Reply, index: int, out: ResponseWriter, garbage: bytes, wrong_shape: bytes = b""
) -> bool:
    """Misbehave before streaming piece `index` if the script says so, else pace the stream.

    Returns False when the stream must stop here (garbage was sent, or it is cut short)."""
    if reply.reset_after is not None and index == reply.reset_after:
        out.reset()
    if reply.garbage_after is not None and index == reply.garbage_after:
        await out.write(garbage)
        return False
    if reply.wrong_shape_after is not None and index == reply.wrong_shape_after:
        await out.write(wrong_shape)
    if reply.stall_after is not None and index == reply.stall_after:
        await out.hang()
    if reply.end_after is not None and index == reply.end_after:
        return False
    if index:
        await trio.sleep(reply.chunk_delay)
    return True


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic unit vector for a text: the same text always embeds the same."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
