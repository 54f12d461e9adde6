from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture
async def fake_openai(nursery: trio.Nursery) -> AsyncIterator[FakeOpenAI]:
    yield await FakeOpenAI().start(nursery)


@pytest.fixture
async def fake_openai_backup(nursery: trio.Nursery) -> AsyncIterator[FakeOpenAI]:
    backup = await FakeOpenAI().start(nursery)
    backup.replies.default.text = "Answer from the backup upstream."
    yield backup


@pytest.fixture
async def fake_anthropic(nursery: trio.Nursery) -> AsyncIterator[FakeAnthropic]:
    yield await FakeAnthropic().start(nursery)


@pytest.fixture
async def fake_gemini(nursery: trio.Nursery) -> AsyncIterator[FakeGemini]:
    yield await FakeGemini().start(nursery)


@pytest.fixture
async def fake_ollama(nursery: trio.Nursery) -> AsyncIterator[FakeOllama]:
    yield await FakeOllama().start(nursery)
