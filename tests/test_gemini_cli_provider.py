"""The real Gemini CLI (npm) as the gemini-cli provider, talking to a fake Gemini API."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import trio

from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.scripts import Reply
from tests.harness import cli_executable, eventually, gemini_cli_provider, serve, settings_for
from tests.test_claude_cli_provider import processes_in


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client", max_retries=0, timeout=60)


async def test_streaming_and_non_streaming_through_the_real_gemini_cli(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.replies.push(
        Reply(text="alpha beta gamma", pieces=3), Reply(text="Whole.", completion_tokens=2)
    )
    provider = gemini_cli_provider(cli_executable("gemini"), fake_gemini.base_url, tmp_path / "home")
    async with serve(settings_for(tmp_path, provider)) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model="gemini-2.5-flash",
                    stream=True,
                    stream_options={"include_usage": True},
                    messages=[
                        {"role": "system", "content": "Answer tersely."},
                        {"role": "user", "content": "Greek letters?"},
                    ],
                )
            )
        )
        whole = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.with_raw_response.create(
                model="gemini-2.5-flash", messages=[{"role": "user", "content": "Again"}]
            )
        )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "alpha beta gamma" and len(texts) == 3
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(11, 7)]
    assert (
        whole.parse().choices[0].message.content == "Whole." and whole.headers["x-provider"] == "gemini-cli"
    )
    requests = fake_gemini.generate_requests()
    assert len(requests) == 2, "one model call per request: no CLI retries, no side calls"
    first = requests[0]
    assert len(first.body) < 3000, f"lean request expected, got {len(first.body)} bytes"
    prompt = first.body.decode()
    assert "Answer tersely." in prompt and "Greek letters?" in prompt


async def test_auth_failure_marks_needs_login(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    fake_gemini.replies.push(
        Reply(status=401, error_message="API key not valid. Please pass a valid API key.")
    )
    provider = gemini_cli_provider(cli_executable("gemini"), fake_gemini.base_url, tmp_path / "home")
    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]},
        )
        health = (await client.get("/health")).json()
    assert response.status_code == 503 and "auth" in response.json()["error"]["message"]
    assert health["providers"]["gemini-cli"]["health"] == "needs-login"


async def test_disconnect_kills_the_gemini_cli(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    fake_gemini.replies.push(Reply(text="y" * 40, pieces=40, chunk_delay=0.25))
    provider = gemini_cli_provider(cli_executable("gemini"), fake_gemini.base_url, tmp_path / "home")
    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        workdir = Path(relay.system.settings.data_dir) / "gemini-cli-workdir"
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "gemini-2.5-flash",
                "stream": True,
                "messages": [{"role": "user", "content": "go"}],
            },
        ) as response:
            async for line in response.aiter_lines():
                if '"content":"y' in line:
                    break
            assert processes_in(workdir)
        took = await eventually(lambda: not processes_in(workdir), within=1.5)
    assert took < 1.5


async def test_images_to_a_gemini_cli_only_setup_are_a_clear_400(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    provider = gemini_cli_provider(cli_executable("gemini"), fake_gemini.base_url, tmp_path / "home")
    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "gemini-2.5-flash",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        ],
                    }
                ],
            },
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "capability_missing" and "does not take images" in error["message"]
    assert fake_gemini.generate_requests() == [], "nothing was spawned"


async def test_sampling_settings_are_ignored_not_refused(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    """The CLI takes no temperature, token limit or stop sequence: the request is answered whole,
    and none of them reaches the upstream."""
    fake_gemini.replies.push(Reply(text="Paris is the capital of France.", completion_tokens=7))
    provider = gemini_cli_provider(cli_executable("gemini"), fake_gemini.base_url, tmp_path / "home")
    async with serve(settings_for(tmp_path, provider)) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="gemini-2.5-flash",
                temperature=0.2,
                max_tokens=3,
                stop=["capital"],
                messages=[{"role": "user", "content": "Capital of France?"}],
            )
        )
    assert completion.choices[0].message.content == "Paris is the capital of France."
    generation = fake_gemini.generate_requests()[-1].json().get("generationConfig", {})
    assert generation.get("temperature") != 0.2 and generation.get("maxOutputTokens") != 3
    assert "stopSequences" not in generation
