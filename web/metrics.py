"""GET /metrics: the running system in Prometheus' text format (read from actors' statistics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from relaybox.actors.breaker import BreakerState
from relaybox.actors.key_ring import KeyRingStatistics
from relaybox.actors.provider_statistics import ProviderStatistics
from relaybox.actors.recorder import RecorderStatistics
from relaybox.actors.router_statistics import OverheadStatistics, RouterStatistics
from relaybox.actors.supervisor import ChildState
from relaybox.web.system import System

BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


def render(system: System, refused: Mapping[str, int], errors: Mapping[tuple[str, int], int]) -> str:
    """`refused`: requests the guard refused, by reason (host, origin, content_type); `errors`:
    every 4xx and 5xx answered, by route and status (from the access log)."""
    providers = {name: actor.statistics() for name, actor in system.providers.items()}
    router = system.router.statistics()
    recorder = system.recorder.statistics()
    mailboxes = [(p, s.mailbox) for p, s in providers.items()]
    mailboxes += [(system.router.name, router.mailbox), (system.recorder.name, recorder.mailbox)]
    lines = _attempts(providers, router) + _overhead(router.overhead) + _providers(providers)
    lines += _family(
        "relaybox_mailbox_depth",
        "gauge",
        "Messages waiting in an actor's mailbox.",
        ((_labels(actor=n), s.depth) for n, s in mailboxes),
    )
    children = system.supervisor.statistics().children
    lines += _family(
        "relaybox_actor_restarts_total",
        "counter",
        "Supervisor restarts.",
        ((_labels(actor=c.name), c.restarts) for c in children),
    )
    lines += _family(
        "relaybox_actor_up",
        "gauge",
        "1 while the actor runs; 0 while it restarts, or is left down after crashing too often.",
        ((_labels(actor=c.name), 1 if c.state is ChildState.RUNNING else 0) for c in children),
    )
    if system.keys is not None:
        lines += _key_checks(system.keys.statistics())
    lines += _family(
        "relaybox_requests_refused_total",
        "counter",
        "Requests refused before any work: a foreign Host, a foreign web page's Origin, a body not sent as JSON.",
        ((_labels(reason=r), refused.get(r, 0)) for r in ("host", "origin", "content_type")),
    )
    lines += _family(
        "relaybox_http_errors_total",
        "counter",
        'Responses with a 4xx or 5xx status, by the route asked ("(no route)" for paths relaybox does not serve) and status; 499: the client left first.',
        ((_labels(route=route, status=str(status)), n) for (route, status), n in sorted(errors.items())),
    )
    lines += _recorder(recorder)
    return "\n".join(lines) + "\n"


def _attempts(providers: dict[str, ProviderStatistics], router: RouterStatistics) -> list[str]:
    """Per provider and model: attempts, fallbacks, tokens, cost, time to first token."""
    totals = [(p, m, t) for p, snapshot in providers.items() for m, t in snapshot.totals.items()]
    lines: list[str] = []
    lines += _family(
        "relaybox_attempts_total",
        "counter",
        "Provider attempts by outcome.",
        ((_labels(provider=p, model=m, outcome=o), n) for p, m, t in totals for o, n in t.attempts.items()),
    )
    lines += _family(
        "relaybox_fallbacks_total",
        "counter",
        "Requests answered by a fallback candidate.",
        (
            (_labels(provider=key.partition("/")[0], model=key.partition("/")[2]), c.served_as_fallback)
            for key, c in router.outcomes.items()
        ),
    )
    lines += _family(
        "relaybox_tokens_total",
        "counter",
        "Tokens by direction.",
        [(_labels(provider=p, model=m, direction="in"), t.tokens_in) for p, m, t in totals]
        + [(_labels(provider=p, model=m, direction="out"), t.tokens_out) for p, m, t in totals],
    )
    lines += _family(
        "relaybox_cost_usd_total",
        "counter",
        "Cost in US dollars.",
        ((_labels(provider=p, model=m), t.cost_usd) for p, m, t in totals),
    )
    lines += _family(
        "relaybox_time_to_first_token_seconds_sum",
        "counter",
        "Sum of times to first output.",
        ((_labels(provider=p, model=m), t.ttft_seconds) for p, m, t in totals),
    )
    lines += _family(
        "relaybox_time_to_first_token_seconds_count",
        "counter",
        "Attempts with a first output.",
        ((_labels(provider=p, model=m), t.ttft_count) for p, m, t in totals),
    )
    return lines


def _overhead(overhead: OverheadStatistics) -> list[str]:
    cumulative, samples = 0, []
    for bound, count in zip((*overhead.bounds_ms, float("inf")), overhead.counts, strict=True):
        cumulative += count
        le = "+Inf" if bound == float("inf") else f"{bound / 1000:g}"
        samples.append(("_bucket" + _labels(le=le), cumulative))
    return _family(
        "relaybox_overhead_seconds",
        "histogram",
        "Time relaybox itself added to a request (excluding upstream time).",
        [*samples, ("_sum", overhead.sum_ms / 1000), ("_count", cumulative)],
    )


def _providers(providers: dict[str, ProviderStatistics]) -> list[str]:
    lines = _family(
        "relaybox_in_flight",
        "gauge",
        "Jobs running in a provider actor.",
        ((_labels(provider=p), s.in_flight) for p, s in providers.items()),
    )
    lines += _family(
        "relaybox_breaker_state",
        "gauge",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        ((_labels(provider=p), BREAKER_VALUE[s.breaker.state]) for p, s in providers.items()),
    )
    lines += _family(
        "relaybox_provider_up",
        "gauge",
        "1 when the provider can take work.",
        ((_labels(provider=p), 1 if s.accepting else 0) for p, s in providers.items()),
    )
    return lines


def _key_checks(keys: KeyRingStatistics) -> list[str]:
    return _family(
        "relaybox_key_checks_total",
        "counter",
        "Client-key outcomes: refused (401/403/503), limited (429 over a key's limit), "
        "uncounted (let through: the database did not count it within 100 ms).",
        [
            (_labels(outcome="refused"), keys.refused),
            (_labels(outcome="limited"), keys.limited),
            (_labels(outcome="uncounted"), keys.uncounted),
        ],
    )


def _recorder(recorder: RecorderStatistics) -> list[str]:
    lines: list[str] = []
    lines += _family(
        "relaybox_recorder_records",
        "gauge",
        "Records held by the recorder, by place.",
        [(_labels(place="buffer"), recorder.buffered), (_labels(place="journal"), recorder.journaled)],
    )
    lines += _family(
        "relaybox_recorder_written_total", "counter", "Records written to storage.", [("", recorder.written)]
    )
    lines += _family(
        "relaybox_recorder_dropped_total",
        "counter",
        "Records lost (recorder hopelessly behind).",
        [("", recorder.dropped)],
    )
    lines += _family(
        "relaybox_journal_ok",
        "gauge",
        "1 when the record journal takes records quickly (0: failing, or answers no longer wait for it).",
        [("", 0 if recorder.journal_failed or recorder.journal_slow else 1)],
    )
    lines += _family(
        "relaybox_storage_up",
        "gauge",
        "1 when the last write to storage succeeded.",
        [("", 1 if recorder.storage_up else 0)],
    )
    return lines
