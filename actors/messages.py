"""The messages the router and the provider actors exchange: a closed set of frozen classes."""

from __future__ import annotations

import enum

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox
from relaybox.protocol.chat import ChatRequest, ImageRequest
from relaybox.protocol.errors import AttemptFailure
from relaybox.protocol.events import Event
from relaybox.protocol.routing.catalog import Candidate, Route
from relaybox.protocol.routing.classifier import Classification
from relaybox.storage.records import KeyBudget


@attrs.frozen(eq=False)
class Dispatch:
    """From the HTTP handler to the router: serve this request, answer on `reply`."""

    request_id: str
    request: ChatRequest | ImageRequest
    reply: trio.MemorySendChannel[Event]
    cancel: CancelToken
    client: str | None = None  # who asked: "key:NAME" for a client key, else its user agent
    route_header: str | None = None  # x-relaybox-route: a named route chosen outside the model name
    # Set when the LLM classifier has already judged this request (it is dispatched a second time).
    classification: Classification | None = None
    # Prompt compression: the level (trimming to a model's window happens at "aggressive"), and the
    # tokens the stages that ran before dispatch saved (None: compression was off).
    compression_level: str = "safe"
    tokens_saved: int | None = None
    key_budget: KeyBudget | None = None  # the client key's own budget, if it has one


@attrs.frozen
class DispatchState:
    """Where one request stands in its route; it travels with each attempt, so a restarted
    router loses nothing."""

    request_id: str
    route: Route
    next_index: int = 0
    attempts: int = 0
    failures: tuple[AttemptFailure, ...] = ()
    failed_upstream_ms: float = 0.0
    client: str | None = None
    # What the classifier said, for the log and for the evidence the outcome feeds.
    category: str = "other"
    complexity: int = 0
    ab_test: str | None = None
    ab_variant: str | None = None
    # A complete answer the cascade held back for a stronger model: sent if none of them answers.
    held_answer: tuple[Event, ...] = ()
    # Prompt compression, as in `Dispatch`; trimming for this attempt's model adds to `tokens_saved`.
    compression_level: str = "safe"
    tokens_saved: int | None = None
    key_budget: KeyBudget | None = None


@attrs.frozen(eq=False)
class Job:
    """From the router to a provider actor: one attempt of one request."""

    request: ChatRequest | ImageRequest
    candidate: Candidate
    reply: trio.MemorySendChannel[Event]
    cancel: CancelToken
    state: DispatchState
    report_to: Mailbox[RouterMessage]
    # Cascade: a held (non-streaming) answer scoring below this is not sent; a stronger
    # candidate behind this one answers instead. None: the answer goes out whatever it scores.
    escalate_below: int | None = None


class AttemptResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"


@attrs.frozen(eq=False)
class AttemptEnded:
    """From a provider actor to the router, once per job.

    `answered` means the client already received output from this attempt, so a failure is
    final: the provider has ended the client's stream with an error event itself.
    """

    job: Job
    result: AttemptResult
    upstream_ms: float
    answered: bool
    failure: AttemptFailure | None = None
    score: int | None = None  # the answer's heuristic score (0-100), when there was an answer
    held_answer: tuple[Event, ...] = ()  # a poor answer held back (POOR_ANSWER), in full


RouterMessage = Dispatch | AttemptEnded
