"""The circuit breaker, alone and inside a provider actor, on trio's mock clock."""

from __future__ import annotations

from pathlib import Path

import trio
from relaybox.actors.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import Answering, Failed, Finished
from relaybox.web.system import running_system

from tests.harness import openai_provider, settings_for
from tests.scripted import Answer, ScriptedTransport, chat, complete

POLICY = BreakerPolicy(
    consecutive_failures=3, failure_rate=0.5, window=60, minimum_volume=10, cooldown=5, max_cooldown=20
)


def test_consecutive_failures_open_then_half_open_probe_closes() -> None:
    breaker = CircuitBreaker(POLICY)
    for t in (0, 1):
        breaker.record_failure(t)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(2)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after(6) == 1
    assert not breaker.allow(6.99)
    assert breaker.allow(7.0) and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(7.0), "one probe at a time"
    breaker.record_success(8)
    assert breaker.state is BreakerState.CLOSED and breaker.allow(8)


def test_failed_probes_grow_the_cooldown_up_to_its_cap() -> None:
    breaker = CircuitBreaker(POLICY)
    for t in range(3):
        breaker.record_failure(t)
    opened, cooldowns = 2.0, []
    for _ in range(4):
        reopen = opened + breaker.retry_after(opened)  # type: ignore[operator]
        cooldowns.append(reopen - opened)
        assert breaker.allow(reopen)
        breaker.record_failure(reopen)
        opened = reopen
    assert cooldowns == [5, 10, 20, 20]
    assert breaker.allow(opened + 20)
    breaker.record_success(opened + 20)
    breaker.record_failure(100)
    breaker.record_failure(100)
    breaker.record_failure(100)
    assert breaker.retry_after(100) == 5, "a successful probe resets the cooldown"


def test_failure_rate_over_the_window_with_minimum_volume() -> None:
    breaker = CircuitBreaker(POLICY)
    for t in range(9):  # alternate: never three failures in a row
        (breaker.record_failure if t % 2 else breaker.record_success)(t)
    assert breaker.state is BreakerState.CLOSED  # 9 outcomes: below the minimum volume
    breaker.record_failure(9)
    assert breaker.state is BreakerState.OPEN  # 5 of 10 failed


def test_old_outcomes_leave_the_window() -> None:
    breaker = CircuitBreaker(POLICY)
    for t in range(5):
        breaker.record_failure(t * 0.1)
        breaker.record_success(t * 0.1)
    breaker.record_failure(100)
    assert breaker.statistics(100).window_total == 1
    assert breaker.state is BreakerState.CLOSED


def test_neutral_outcomes_release_the_probe_without_closing() -> None:
    breaker = CircuitBreaker(POLICY)
    for t in range(3):
        breaker.record_failure(t)
    assert breaker.allow(7)
    breaker.record_neutral()
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow(7)


def test_retry_after_opens_until_then_without_growing_the_cooldown() -> None:
    breaker = CircuitBreaker(POLICY)
    breaker.open_for(10, 30)
    assert breaker.state is BreakerState.OPEN and breaker.retry_after(10) == 30
    assert not breaker.allow(39.9) and breaker.allow(40)
    assert breaker.trips == 0


def transport_failure() -> ProviderFailure:
    return ProviderFailure(FailureKind.TRANSPORT, "connection refused")


async def test_breaker_in_a_provider_actor_on_the_mock_clock(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    transport = ScriptedTransport(*[transport_failure()] * 4, default=Answer("recovered"))
    settings = settings_for(tmp_path, openai_provider("up", "http://unused", models=("m",)), breaker=POLICY)
    async with running_system(settings, lambda config, settings: transport) as system:
        provider = system.providers["up"]
        started = trio.current_time()
        for _ in range(3):
            events = await complete(system, chat())
            assert isinstance(events[-1], Failed) and events[-1].error.status == 503
        assert provider.breaker.state is BreakerState.OPEN and transport.calls == 3
        events = await complete(system, chat())
        assert "provider is down" in events[-1].error.message  # type: ignore[union-attr]
        assert events[-1].error.retry_after == 5  # type: ignore[union-attr]
        assert transport.calls == 3, "open: nothing reaches the upstream"

        await trio.sleep_until(started + 5)
        events = await complete(system, chat())  # the half-open probe fails: open for 10 s
        assert transport.calls == 4 and provider.breaker.state is BreakerState.OPEN
        assert provider.breaker.retry_after(trio.current_time()) == 10
        assert provider.health().value == "down"

        await trio.sleep(10)
        events = await complete(system, chat())
        assert isinstance(events[0], Answering) and isinstance(events[-1], Finished)
        assert provider.breaker.state is BreakerState.CLOSED
        assert provider.health().value == "healthy"


async def test_upstream_retry_after_holds_the_breaker_open(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    limited = ProviderFailure(FailureKind.RATE_LIMITED, "429", upstream_status=429, retry_after=30)
    transport = ScriptedTransport(limited, default=Answer("ok"))
    settings = settings_for(tmp_path, openai_provider("up", "http://unused", models=("m",)), breaker=POLICY)
    async with running_system(settings, lambda config, settings: transport) as system:
        first = await complete(system, chat())
        assert first[-1].error.status == 429 and first[-1].error.retry_after == 30  # type: ignore[union-attr]
        await trio.sleep(29.9)
        assert (await complete(system, chat()))[-1].error.status == 503  # type: ignore[union-attr]
        await trio.sleep(0.1)
        assert isinstance((await complete(system, chat()))[-1], Finished)
        assert transport.calls == 2


async def test_refused_requests_do_not_feed_the_breaker(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    refused = ProviderFailure(FailureKind.REJECTED, "bad request", upstream_status=400)
    transport = ScriptedTransport(*[refused] * 5, default=Answer())
    settings = settings_for(tmp_path, openai_provider("up", "http://unused", models=("m",)), breaker=POLICY)
    async with running_system(settings, lambda config, settings: transport) as system:
        for _ in range(5):
            assert (await complete(system, chat()))[-1].error.status == 400  # type: ignore[union-attr]
        assert system.providers["up"].breaker.state is BreakerState.CLOSED
