"""Every message an actor receives: a closed set of frozen classes, one union per actor.

router          RouterMessage    Dispatch (from the request pipeline), AttemptEnded (from a
                                 provider), SetProviderEnabled (from the settings API),
                                 EvidenceLoaded (from its own refresh), OverheadObserved,
                                 Learned (labels, from the learning actor), Rated (a user's
                                 rating, from the feedback endpoints)
provider        Job              one attempt of one request, from the router (or the learning actor)
learning        LearningMessage  Compare (a follow-up to judge, from the router), Labelled (labels
                                 to share through storage, from the router)
budget          BudgetMessage    Reserve (asks; the reply is a `Reservation`), Settle
recorder        RecorderMessage  a record (storage's type: it is what gets written), or Durable: one
                                 whose sender waits until the journal holds it
response-cache  CacheWrite       an answer to write to the cache's shared tier
responses       KeepResponse     a Responses API response to store, from its handler
mcp:NAME        CallTool         a tool call to run, from the tool loop (the reply: a ToolResult)
tool-loops      LoopToRun        a request's tool loop, to run in a task of its own (from its handler)
keys            (none)           it reads storage on its own schedule
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.errors import AttemptFailure
from relaybox.protocol.events import Event
from relaybox.protocol.keys import KeyBudget
from relaybox.protocol.routing.catalog import Candidate, Route
from relaybox.protocol.routing.classifier import Classification
from relaybox.protocol.routing.evidence import RollupRow
from relaybox.protocol.routing.judging import FollowUp
from relaybox.protocol.routing.learned import Label
from relaybox.protocol.routing.progress import DispatchState
from relaybox.protocol.routing.promise import Comparison
from relaybox.storage.records import AttemptRecord, CachedRow, Reservation, StoredResponse

# --- the router ---------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Dispatch:
    """From the request pipeline to the router: serve this request, answer on `reply`."""

    request_id: str
    request: ModelRequest
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
    # relaybox's own call rather than a client's ("test": a connection test): logged with that
    # status, and no evidence for routing.
    purpose: str | None = None
    # Attempts this request made before this dispatch (a tool loop's earlier steps): the log numbers
    # on from there, so the loop is one request with many attempts.
    attempts_before: int = 0

    def starting_state(
        self, route: Route, category: str, complexity: int, ab: tuple[str, str] | None
    ) -> DispatchState:
        """Where this request stands before its first attempt, on the route chosen for it."""
        return DispatchState(
            request_id=self.request_id,
            route=route,
            client=self.client,
            category=category,
            complexity=complexity,
            ab_test=ab[0] if ab else None,
            ab_variant=ab[1] if ab else None,
            compression_level=self.compression_level,
            tokens_saved=self.tokens_saved,
            key_budget=self.key_budget,
            purpose=self.purpose,
            attempts=self.attempts_before,
        )


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
    # The answer's text, for an attempt the learned router chose (a judge may grade it).
    answer: str | None = None

    @property
    def outcome(self) -> str:
        """ "success", "cancelled", or the failure kind."""
        return self.failure.kind.value if self.failure is not None else self.result.value


@attrs.frozen
class SetProviderEnabled:
    """From the settings API: stop or resume sending work to a provider, and its priority."""

    provider: str
    enabled: bool
    priority: int | None = None


@attrs.frozen
class EvidenceLoaded:
    """From the router's own refresh task: storage's evidence, read at wall-clock `at`."""

    rows: tuple[RollupRow, ...]
    at: float
    started: float  # the router's clock when the read began


@attrs.frozen
class OverheadObserved:
    """From the request pipeline, once per answered request: the milliseconds relaybox itself added."""

    milliseconds: float


@attrs.frozen
class Learned:
    """From the learning actor: labels to learn from (a judge's verdicts, or other instances')."""

    labels: tuple[Label, ...]


@attrs.frozen
class Rated:
    """From the feedback endpoints: a user rated the answer of request group `group` (1-5)."""

    group: str
    rating: int


@attrs.frozen
class Compared:
    """From the learning actor: blind comparisons of the route's two ends on prompts drawn at
    random, for the quality promise (one just made, or those storage kept)."""

    comparisons: tuple[Comparison, ...]
    stored: bool = False  # read back from storage (this instance's before a restart, or another's)


RouterMessage = (
    Dispatch
    | AttemptEnded
    | SetProviderEnabled
    | EvidenceLoaded
    | OverheadObserved
    | Learned
    | Rated
    | Compared
)


class AttemptReports(Protocol):
    """Where a provider reports an attempt's end: the router's mailbox, or the learning actor's
    sink for attempts it made itself."""

    async def send(self, message: AttemptEnded) -> None: ...


# --- a provider ---------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Job:
    """From the router to a provider actor: one attempt of one request."""

    request: ModelRequest
    candidate: Candidate
    reply: trio.MemorySendChannel[Event]
    cancel: CancelToken
    state: DispatchState
    report_to: AttemptReports
    # Cascade: a held (non-streaming) answer scoring below this is not sent; a stronger
    # candidate behind this one answers instead. None: the answer goes out whatever it scores.
    escalate_below: int | None = None


# --- the budget ---------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Reserve:
    """From a provider, before a paid attempt: hold `amount` against the budgets, or refuse."""

    reservation_id: str
    amount: float
    reply: trio.MemorySendChannel[Reservation]
    key_budget: KeyBudget | None = None  # the client key's own budget, checked with the global ones


@attrs.frozen
class Settle:
    """From a provider, after the attempt: replace the held estimate with what it really cost."""

    reservation_id: str
    amount: float


BudgetMessage = Reserve | Settle


# --- the recorder and the response cache's writer -------------------------------------------


@attrs.frozen(eq=False)
class Durable:
    """A record whose sender waits until the journal holds it: an answer's last byte waits on it,
    so an answered request's record outlives a kill of relaybox."""

    record: AttemptRecord
    journaled: trio.Event = attrs.field(factory=trio.Event)


RecorderMessage = AttemptRecord | Durable


# --- the learning actor ---------------------------------------------------------------------


@attrs.frozen(eq=False)
class Compare:
    """From the router, after a learned-routed answer went out: grade it (`FollowUp.JUDGE`), or
    first ask `other` the same and grade both. `judge`: the model that grades."""

    kind: FollowUp
    request: ChatRequest
    state: DispatchState  # the served attempt's (its request id, route and features)
    served: Candidate
    answer: str
    judge: Candidate
    other: Candidate | None = None
    # For the quality promise (`FollowUp.PAIR`): the prompt's score, and whether the strongest served.
    score: float | None = None
    served_strong: bool = False


@attrs.frozen
class Labelled:
    """From the router: labels it learned from on its own (the scorer's), to share via storage."""

    labels: tuple[Label, ...]


LearningMessage = Compare | Labelled


@attrs.frozen
class CacheWrite:
    """From the request pipeline: a finished answer to keep in the response cache's shared tier."""

    key: str  # the normalised request's digest, in hex
    row: CachedRow


@attrs.frozen(eq=False)
class KeepResponse:
    """From the Responses API's handler: a response to store. `written` is set once the database
    holds it (or has refused it), which the handler waits for, briefly, so that another instance
    can continue the conversation as soon as the client has the answer."""

    row: StoredResponse
    written: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class ToolResult:
    """What one MCP tool call gave the tool loop: the text the model reads, whether it went well."""

    text: str
    ok: bool
    seconds: float = 0.0


@attrs.frozen(eq=False)
class CallTool:
    """From the tool loop: run `tool` of this server with these arguments."""

    tool: str
    arguments: dict[str, Any]
    reply: trio.MemorySendChannel[ToolResult]
    deadline: float  # trio's clock: the call is answered by then, its wait for a turn included


# --- the tool loops' runner ---------------------------------------------------------------


class LoopToRun(Protocol):
    """A request's server-side tool loop (`web/tool_loop.py`), handed over to run."""

    async def run(self) -> None:
        """Hand the loop's events to its reader until the answer ends or the reader goes."""
        ...

    def abandon(self) -> None:
        """Never to run (the runner stopped first): tell the reader so at once."""
        ...
