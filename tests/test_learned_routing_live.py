"""The learned router as relaybox runs it: `auto` decided per prompt, labels made by shadow answers
and a judge model, and what one instance learns shared with another through the database (and
kept for it while the database is away)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx
import trio
import trio_asyncio
from relaybox.actors.learned_routing import LearnedRouting
from relaybox.actors.learning import LearningActor
from relaybox.actors.messages import Labelled, Learned
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.protocol.routing.catalog import Catalog, ModelEntry
from relaybox.protocol.routing.learned import Label, features
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.routing.promise import Comparison
from relaybox.storage.contract import StorageError
from relaybox.storage.records import ApiKey
from relaybox.web.config import ProviderConfig, Settings

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import QUIET_LEARNING, eventually, openai_provider, serve, settings_for
from tests.storage_fixtures import fresh_postgres_database

PIECES = ("knight", "bishop", "rook", "queen", "king", "pawn")
COUNTRIES = ("France", "Peru", "Kenya", "Japan", "Chile", "Norway", "Egypt", "India", "Ghana", "Laos")
WRONG = "(this is wrong)"  # what the fake judge sees and the scorer cannot


def chess_question(rng: random.Random) -> str:
    a, b = rng.sample(PIECES, 2)
    return f"In chess, can a {a} capture a {b} standing {rng.randint(2, 7)} squares away on its diagonal?"


def capital_question(rng: random.Random) -> str:
    return f"What is the capital city of {rng.choice(COUNTRIES)}? Answer in one sentence."


def judging(body: dict) -> bool:
    """Whether a request to a fake model is relaybox's judge asking for a verdict."""
    return any(m["role"] == "system" and "You grade answers" in m["content"] for m in body["messages"])


def model(answer: Callable[[str], str]) -> Callable[[dict], Reply]:
    """A fake model that answers questions with `answer`, and grades answers when asked to judge:
    an answer is bad when it carries the mark of a wrong one."""

    def reply(body: dict) -> Reply:
        messages = body["messages"]
        if judging(body):
            graded = re.findall(
                r"Answer ([A-Z]):\n(.*?)(?=\n\nAnswer [A-Z]:|\Z)", messages[-1]["content"], re.S
            )
            return Reply(
                "\n".join(f"{letter}: {'BAD' if WRONG in text else 'GOOD'}" for letter, text in graded)
            )
        return Reply(answer(messages[-1]["content"]))

    return reply


def cheap_answer(question: str) -> str:
    """The cheap model answers capitals well and chess confidently wrong."""
    if "chess" in question:
        return f"Yes, it can: every piece may capture along a diagonal at any distance. {WRONG}"
    return "The capital is the city where the national government sits, as the question asks."


def strong_answer(question: str) -> str:
    return "A careful, correct answer to the question, with the reasoning laid out step by step."


def provider(name: str, base_url: str, model_id: str, tier: str, price: float) -> ProviderConfig:
    return attrs.evolve(
        openai_provider(name, base_url, models=(model_id,)),
        models=(ModelEntry(model_id, tier, price, price * 4, 128_000),),
    )


def two_models(
    tmp_path: Path, cheap: FakeOpenAI, strong: FakeOpenAI, learned: LearnedPolicy, **changes: object
) -> Settings:
    return settings_for(
        tmp_path,
        provider("cheap", cheap.base_url, "small", "economy", 0.1),
        provider("strong", strong.base_url, "big", "premium", 10.0),
        routing=RoutingSettings(learned=learned, seed=7, refresh_seconds=0.5),
        **changes,
    )


async def served_by(client: httpx.AsyncClient, question: str, *, stream: bool = False) -> tuple[str, str]:
    body = {"model": "auto", "messages": [{"role": "user", "content": question}], "stream": stream}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-model"], answer.headers["x-router-reason"]


async def test_relaybox_learns_which_prompts_the_cheap_model_fails_and_a_second_instance_knows_it(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    teaching = LearnedPolicy(quality_kept=None, judge_rate=1.0, shadow_rate=1.0, shadow_up_rate=0.0)
    rng = random.Random(16)
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn:
        first = two_models(tmp_path / "a", fake_openai, fake_openai_backup, teaching, database_url=dsn)
        async with serve(first) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
            learning = relay.system.learning
            assert learning is not None
            before = {
                kind: [await served_by(client, ask(rng)) for _ in range(5)]
                for kind, ask in (("chess", chess_question), ("capital", capital_question))
            }
            for round_ in range(40):
                for ask in (chess_question, capital_question):
                    await served_by(client, ask(rng), stream=round_ % 2 == 1)
                    await eventually(lambda: learning.statistics().running == 0, within=10)
            after = {
                kind: [await served_by(client, ask(rng)) for _ in range(10)]
                for kind, ask in (("chess", chess_question), ("capital", capital_question))
            }
            await eventually(lambda: learning.statistics().running == 0, within=10)
            statistics = learning.statistics()
            await eventually(lambda: learning.statistics().labels_saved >= 80, within=10)
            for _ in range(100):  # until the recorder has written every attempt of relaybox's own
                shadows = await relay.system.storage.recent(status="shadow", limit=500)
                verdicts = await relay.system.storage.recent(status="judge", limit=500)
                if len(verdicts) == sum(statistics.comparisons.values()):  # a verdict each
                    break
                await trio.sleep(0.1)
            requests = await relay.system.storage.recent(limit=2000)
            dashboard = (await client.get("/api/stats")).json()

        # Before: the prior alone decides, and it cannot tell chess from capitals.
        assert {m for m, _ in before["chess"]} == {m for m, _ in before["capital"]}
        # After: the kind of prompt the cheap model fails goes up; the rest stays down.
        assert [m for m, _ in after["chess"]] == ["big"] * 10, after["chess"]
        assert [m for m, _ in after["capital"]] == ["small"] * 10, after["capital"]
        assert all(reason.startswith("auto: learned: ") for _, reason in after["chess"] + after["capital"])
        assert re.search(r"labels? of its own", after["capital"][0][1])
        # The labels came from the judge: the cheap model's chess answers graded bad, its capitals good.
        assert (
            statistics.verdicts["cheap/small"]["bad"] >= 10
            and statistics.verdicts["cheap/small"]["good"] >= 10
        )
        assert statistics.verdicts["strong/big"]["bad"] == 0
        assert (
            statistics.comparisons.get("shadow_down", 0) >= 5 and statistics.comparisons.get("judge", 0) >= 5
        )
        # Shadow answers and verdicts are logged as attempts of their own, linked to the client's
        # request, paid for, and never counted as requests or as answers to the client.
        groups = {r.request_group_id for r in requests if r.status == "success"}
        assert shadows and verdicts
        assert all(
            r.request_group_id in groups and r.attempt == 0 and r.cost_usd > 0 for r in shadows + verdicts
        )
        assert all(r.model_selected == "small" for r in shadows)
        # The dashboard shows what it cost and what it taught.
        spend = dashboard["learning_spend"]
        assert {r["status"] for r in spend} == {"shadow", "judge"} and all(r["cost_usd"] > 0 for r in spend)
        assert sum(r["attempts"] for r in spend) == len(shadows) + len(verdicts)
        assert dashboard["learned_routing"]["verdicts"]["cheap/small"]["bad"] >= 10

        # A second instance on the same database routes the same way from its first request: it
        # learned from the first instance's labels, starting no judging of its own.
        second = two_models(tmp_path / "b", fake_openai, fake_openai_backup, QUIET_LEARNING, database_url=dsn)
        async with serve(second) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
            learning = relay.system.learning
            assert learning is not None
            await eventually(lambda: learning.statistics().labels_loaded >= 80, within=10)
            chess = [await served_by(client, chess_question(rng)) for _ in range(10)]
            capitals = [await served_by(client, capital_question(rng)) for _ in range(10)]
            assert learning.statistics().comparisons == {}
        assert [m for m, _ in chess] == ["big"] * 10, chess
        assert [m for m, _ in capitals] == ["small"] * 10, capitals


async def test_a_users_rating_teaches_the_learned_router(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    anything_goes = attrs.evolve(QUIET_LEARNING, quality_target=0.0)  # the cheap model serves everything
    question = chess_question(random.Random(1))
    async with (
        serve(two_models(tmp_path, fake_openai, fake_openai_backup, anything_goes)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        router = relay.system.router
        labels: list[int] = []
        predicted: list[float] = []  # the cheap model's p(good) for the question, as each decision said
        for rating in (1, 1, 3, 5):
            body = {"model": "auto", "messages": [{"role": "user", "content": question}]}
            answer = await client.post("/v1/chat/completions", json=body)
            assert answer.headers["x-model"] == "small"
            predicted.append(float(re.findall(r"p\(good\)=([0-9.]+)", answer.headers["x-router-reason"])[0]))
            labels.append(router.statistics().learned.labels.get("cheap/small", 0))
            rating_body = {"taskId": answer.headers["x-task-id"], "rating": rating}
            assert (await client.post("/api/feedback", json=rating_body)).status_code == 200
            await eventually(lambda: router.mailbox.statistics().depth == 0, within=5)
        after = router.statistics().learned.labels.get("cheap/small", 0)
    # Two bad ratings were learned, a 3 says nothing, a 5 is a good label.
    assert labels == [0, 1, 2, 2] and after == 3
    assert predicted[0] > predicted[1] > predicted[2] == predicted[3]


async def test_with_prompts_none_labels_teach_this_instance_only(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """Labels are hashed words of prompts: an instance that keeps no prompt text learns from the
    judge's verdicts in memory and writes none of them to the database."""
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    teaching = LearnedPolicy(quality_kept=None, judge_rate=1.0, shadow_rate=1.0, shadow_up_rate=0.0)
    rng = random.Random(3)
    settings = two_models(tmp_path, fake_openai, fake_openai_backup, teaching, log_prompts="none")
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning, router = relay.system.learning, relay.system.router
        assert learning is not None
        for _ in range(4):
            await served_by(client, chess_question(rng))
            await eventually(lambda: learning.statistics().running == 0, within=10)
        await eventually(lambda: router.mailbox.statistics().depth == 0, within=5)
        statistics = learning.statistics()
        learned = sum(router.statistics().learned.labels.values())
        stored = await relay.system.storage.routing_labels(after_id=0, limit=100)
    assert sum(sum(v.values()) for v in statistics.verdicts.values()) >= 4 and learned >= 4
    assert statistics.labels_saved == 0 and stored == []


class FlakyLabelStore:
    """A database that refuses the first write, then keeps everything."""

    def __init__(self) -> None:
        self.refused = 0
        self.saved: list[Label] = []

    async def add_routing_labels(self, labels: list[Label], *, instance: str, now: float, keep: int) -> None:
        if not self.refused:
            self.refused += 1
            raise StorageError("database restarting")
        self.saved.extend(labels)

    async def routing_labels(self, *, after_id: int, limit: int) -> list[tuple[int, str, Label]]:
        return []

    async def add_routing_comparisons(
        self, comparisons: list[Comparison], *, instance: str, now: float, keep: int
    ) -> None:
        raise AssertionError("no comparison was made")

    async def routing_comparisons(self, *, after_id: int, limit: int) -> list[tuple[int, str, Comparison]]:
        return []


async def test_labels_the_database_refused_are_saved_later_in_order(autojump_clock: trio.abc.Clock) -> None:
    store = FlakyLabelStore()
    learning = LearningActor(Catalog(()), {}, store)
    x = features([capital_question(random.Random(2))])

    def labelled(first: int, count: int) -> Labelled:
        return Labelled(
            tuple(
                Label("cheap", "small", "economy", x, 1.0, "scorer", 1.0, f"r{i}")
                for i in range(first, first + count)
            )
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(learning.run)
        learning.mailbox.tell(labelled(0, 3))
        await trio.sleep(1.5)  # the first save was refused
        learning.mailbox.tell(labelled(3, 2))
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert store.refused == 1 and learning.statistics().storage_errors == 1
    assert [label.request_id for label in store.saved] == [f"r{i}" for i in range(5)]
    assert learning.statistics().labels_saved == 5


async def test_a_failed_follow_up_frees_its_place_at_once(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """A judge's call that failed left its place among the learning actor's few taken for the
    300 s answer timeout, with nothing learned and nothing counted meanwhile."""
    answer_questions = model(cheap_answer)

    def cheap(body: dict) -> Reply:
        if judging(body):
            return Reply(status=500)  # the judge (the cheapest model, by default) fails
        return answer_questions(body)

    fake_openai.answer_with = cheap
    fake_openai_backup.answer_with = model(strong_answer)
    judge_every_answer = LearnedPolicy(quality_kept=None, judge_rate=1.0, shadow_rate=0.0, shadow_up_rate=0.0)
    settings = two_models(tmp_path, fake_openai, fake_openai_backup, judge_every_answer)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning = relay.system.learning
        assert learning is not None
        served, _ = await served_by(client, capital_question(random.Random(1)))
        took = await eventually(lambda: learning.statistics().judge_failed == 1, within=5)
        statistics = learning.statistics()
    assert served == "small" and statistics.comparisons == {"judge": 1}
    assert statistics.running == 0 and took < 5


async def test_the_judge_reads_the_end_of_a_long_streamed_answer(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """Of a streamed answer only the first ~8,000 characters were kept, and a final answer is
    usually at the end: the judge now reads the head and the tail."""
    long_answer = "Working it through, step by step. " * 600 + "So the capital is FINAL-MARK."
    judge_model = model(cheap_answer)
    judged: list[str] = []

    def cheap(body: dict) -> Reply:
        if judging(body):
            judged.append(body["messages"][-1]["content"])
            return judge_model(body)
        return Reply(long_answer, pieces=40)

    fake_openai.answer_with = cheap
    fake_openai_backup.answer_with = model(strong_answer)
    judge_every_answer = LearnedPolicy(quality_kept=None, judge_rate=1.0, shadow_rate=0.0, shadow_up_rate=0.0)
    settings = two_models(tmp_path, fake_openai, fake_openai_backup, judge_every_answer)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning = relay.system.learning
        assert learning is not None
        served, _ = await served_by(client, capital_question(random.Random(2)), stream=True)
        await eventually(lambda: judged, within=10)
    assert served == "small" and len(long_answer) > 20_000
    assert "FINAL-MARK" in judged[0] and "Working it through" in judged[0]


async def test_a_follow_up_never_delays_a_clients_request(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """Follow-ups took the same slots as clients: a pinned request waited behind an 8 s judge
    call. Now a follow-up runs on spare capacity only and gives its slot up to a client."""
    answer_questions = model(cheap_answer)
    judging_started = trio.Event()

    def cheap(body: dict) -> Reply:
        if judging(body):
            judging_started.set()
            return Reply("A: GOOD", delay=8.0)  # a slow judge
        return answer_questions(body)

    fake_openai.answer_with = cheap
    fake_openai_backup.answer_with = model(strong_answer)
    judge_every_answer = LearnedPolicy(quality_kept=None, judge_rate=1.0, shadow_rate=0.0, shadow_up_rate=0.0)
    settings = two_models(tmp_path, fake_openai, fake_openai_backup, judge_every_answer)
    one_slot = attrs.evolve(settings.providers[0], limits=attrs.evolve(settings.providers[0].limits, slots=1))
    settings = attrs.evolve(settings, providers=(one_slot, *settings.providers[1:]))
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning = relay.system.learning
        assert learning is not None
        await served_by(client, capital_question(random.Random(3)))
        with trio.fail_after(5):
            await judging_started.wait()
        started = trio.current_time()
        pinned = await client.post(
            "/v1/chat/completions",
            json={"model": "cheap:small", "messages": [{"role": "user", "content": "What is 2 + 2?"}]},
        )
        waited = trio.current_time() - started
        await eventually(lambda: learning.statistics().running == 0, within=5)
        background = relay.system.providers["cheap"].statistics().background
    assert pinned.status_code == 200 and waited < 3.0, f"the pinned request waited {waited:.1f} s"
    assert background.yielded == 1 and learning.statistics().judge_failed == 1


async def test_the_quality_promise_decides_auto_and_reports_what_it_kept(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """With `quality_kept`, answers drawn at random are compared blind with the other end's, and
    `/api/stats` reports the promise beside what it kept; labels of any other kind (the scorer's,
    ratings, other instances') never move its threshold."""
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    promising = LearnedPolicy(quality_kept=0.5, probe_rate=1.0)
    settings = two_models(tmp_path, fake_openai, fake_openai_backup, promising)
    rng = random.Random(9)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning = relay.system.learning
        assert learning is not None
        served = [
            await served_by(client, (chess_question if i % 2 else capital_question)(rng)) for i in range(30)
        ]
        await eventually(lambda: learning.statistics().running == 0, within=10)
        learned = relay.system.router.statistics().learned
        stats = (await client.get("/api/stats")).json()["learned_routing"]
    assert learned.quality_kept is not None and learned.quality_kept.promised == 0.5
    assert learning.statistics().comparisons.get("pair", 0) >= 20, learning.statistics().comparisons
    assert stats["quality_kept"]["promised"] == 0.5 and stats["quality_kept"]["comparisons"] >= 20
    # Before 20 prompts are scored everything goes up (the promise errs toward quality at first).
    assert all(model_id == "big" for model_id, _ in served[:19])
    assert all("promise to keep 0.5" in reason for _, reason in served)


async def test_a_restart_keeps_the_promises_evidence_and_the_dashboard_shows_it_by_day(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """The blind comparisons are stored: a restarted relaybox decides from them at once (no return
    to the start rule, which sends everything up), and `/api/stats` reads what the promise kept by
    day from them."""
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    settings = two_models(
        tmp_path, fake_openai, fake_openai_backup, LearnedPolicy(quality_kept=0.5, probe_rate=1.0)
    )
    rng = random.Random(3)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning = relay.system.learning
        assert learning is not None
        for i in range(60):
            await served_by(client, (chess_question if i % 2 else capital_question)(rng))
        await eventually(lambda: learning.statistics().running == 0, within=10)
        made = relay.system.router.statistics().learned.quality_kept
        assert made is not None and made.comparisons >= 45 and made.estimate is not None
        await eventually(lambda: learning.statistics().comparisons_saved == made.comparisons, within=5)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        learning = relay.system.learning
        assert learning is not None
        await eventually(lambda: learning.statistics().comparisons_loaded == made.comparisons, within=5)
        await eventually(lambda: relay.system.router.mailbox.statistics().depth == 0, within=5)
        kept = relay.system.router.statistics().learned.quality_kept
        stats = (await client.get("/api/stats")).json()
        # The stored prompts' scores stand in for the traffic's: the first prompt after the
        # restart is decided by the evidence (a short one stays cheap), not sent up by the start rule.
        first, _ = await served_by(client, "Capital of Peru?")
    assert first == "small"
    assert kept is not None and kept.comparisons == made.comparisons
    assert (kept.estimate, kept.low, kept.high) == (made.estimate, made.low, made.high)
    (today,) = stats["promise_by_day"]
    assert today["through_day"]["comparisons"] == made.comparisons
    assert today["through_day"]["estimate"] == made.estimate and today["through_day"]["promised"] == 0.5


def test_labels_other_than_blind_comparisons_never_move_the_promise() -> None:
    catalog = Catalog(())
    routing = LearnedRouting(catalog, LearnedPolicy(quality_kept=0.6), random.Random(1))
    assert routing.promise is not None
    before = routing.promise.strong_share()
    bad = Label("cheap", "small", "economy", features(["What is 2 + 2?"]), 0.0, "scorer")
    for _ in range(500):
        routing.receive(Learned((bad,)))
    assert routing.promise.strong_share() == before and routing.promise.estimate().comparisons == 0


async def test_rating_one_answer_again_and_again_counts_once(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """A key rated its one answer 300 times in 0.6 s, and the cheap model's p(good) on other keys'
    prompts fell from 0.72 to 0.10: each rating was a label. Now an answer's ratings teach what the
    latest says, once."""
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    anything_goes = attrs.evolve(QUIET_LEARNING, quality_target=0.0)  # the cheap model serves everything
    async with (
        serve(two_models(tmp_path, fake_openai, fake_openai_backup, anything_goes)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        router = relay.system.router

        async def p_good(question: str) -> tuple[float, str]:
            body = {"model": "auto", "messages": [{"role": "user", "content": question}]}
            answer = await client.post("/v1/chat/completions", json=body)
            p = float(re.findall(r"p\(good\)=([0-9.]+)", answer.headers["x-router-reason"])[0])
            return p, answer.headers["x-task-id"]

        others = capital_question(random.Random(4))
        before, _ = await p_good(others)
        _, rated = await p_good(chess_question(random.Random(5)))
        for _ in range(300):
            assert (
                await client.post("/api/feedback", json={"taskId": rated, "rating": 1})
            ).status_code == 200
        await eventually(lambda: router.mailbox.statistics().depth == 0, within=5)
        labels = router.statistics().learned.labels.get("cheap/small", 0)
        after, _ = await p_good(others)
    assert labels == 1
    assert abs(before - after) < 0.05, (before, after)


async def test_one_keys_ratings_do_not_move_another_keys_routing(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """Under the quality promise only blind comparisons of answers drawn at random move `auto`, so
    a key (a member, rating only its own answers) that rates every answer bad, again and again,
    changes nothing for another key: the threshold, the estimate and the other key's routes stay."""
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    noisy, quiet = new_key(), new_key()
    settings = two_models(
        tmp_path, fake_openai, fake_openai_backup, LearnedPolicy(quality_kept=0.5, probe_rate=1.0)
    )
    rng = random.Random(6)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        storage, keys, router, learning = (
            relay.system.storage,
            relay.system.keys,
            relay.system.router,
            relay.system.learning,
        )
        assert keys is not None and learning is not None
        for name, key in (("noisy", noisy), ("quiet", quiet)):
            await storage.create_key(ApiKey(name, key_hash(key), shown_prefix(key), False, time.time()))
        await keys.load()

        async def ask(key: str, question: str) -> httpx.Response:
            body = {"model": "auto", "messages": [{"role": "user", "content": question}]}
            answer = await client.post("/v1/chat/completions", json=body, headers={"x-api-key": key})
            assert answer.status_code == 200, answer.text
            return answer

        rated = [
            (await ask(noisy, (chess_question if i % 2 else capital_question)(rng))).headers["x-task-id"]
            for i in range(60)
        ]
        await eventually(lambda: learning.statistics().running == 0, within=10)
        await eventually(lambda: router.mailbox.statistics().depth == 0, within=5)
        promise = router.statistics().learned.quality_kept
        assert promise is not None and promise.estimate is not None, "the promise decides from evidence"
        routing = relay.system.router._learned.promise
        assert routing is not None
        before = (routing.strong_share(), routing.estimate(), routing.threshold)
        for task in rated:
            for _ in range(5):
                feedback = {"taskId": task, "rating": 1}
                answer = await client.post("/api/feedback", json=feedback, headers={"x-api-key": noisy})
                assert answer.status_code == 200, answer.text
        await eventually(lambda: router.mailbox.statistics().depth == 0, within=5)
        after = (routing.strong_share(), routing.estimate(), routing.threshold)
        # The chess questions (the only ones the cheap model fails) are the longer ones: the
        # threshold lies between the two kinds, so a very short prompt stays cheap, a long one not.
        quiet_served = [
            (await ask(quiet, question)).headers["x-model"]
            for question in ("Capital of Peru?", chess_question(rng) + " Explain every step in full. " * 8)
        ]
    assert after == before
    assert quiet_served == ["small", "big"]


async def test_a_scorer_rule_that_does_not_fit_the_task_makes_no_label(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """A multiple-choice question about numbers is classified maths, and a right answer worded
    "The answer is C. ..." has no number on its last line: the scorer calls it poor ("no final
    answer"), which made it a bad label, for whichever model wrote it."""
    fake_openai.answer_with = lambda body: Reply("The answer is C. The one that grows the fastest.")
    fake_openai_backup.answer_with = model(strong_answer)
    anything_goes = attrs.evolve(QUIET_LEARNING, quality_target=0.0)
    question = (
        "Which function grows fastest as x increases? Compute the values at x = 10 and x = 20.\n"
        "A. 2x + 3\nB. x^2\nC. 2^x\nD. log(x)\nAnswer with the letter."
    )
    async with (
        serve(two_models(tmp_path, fake_openai, fake_openai_backup, anything_goes)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        body = {"model": "auto", "messages": [{"role": "user", "content": question}], "stream": True}
        answer = await client.post("/v1/chat/completions", json=body)
        await eventually(lambda: relay.system.recorder.written >= 1, within=10)
        await eventually(lambda: relay.system.router.mailbox.statistics().depth == 0, within=5)
        rows = await relay.system.storage.recent(limit=5)
        labels = relay.system.router.statistics().learned.labels
    assert answer.status_code == 200 and answer.headers["x-model"] == "small"
    assert rows and rows[0].task_category == "math" and rows[0].heuristic_score is not None
    assert rows[0].heuristic_score < 50, "the scorer misjudges it: the very case"
    assert labels.get("cheap/small", 0) == 0
