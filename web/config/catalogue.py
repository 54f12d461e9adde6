"""The built-in catalogue: the providers relaybox knows without being told, and their models.

An API provider is enabled by its key in the environment (or a TOML section); a CLI provider by its
executable on PATH. The models, tiers and context windows here are what `auto` chooses from until
the configuration says otherwise (`models = [...]` in the provider's section).
"""

from __future__ import annotations

from pathlib import Path

import attrs
from relaybox.protocol.routing.catalog import ModelEntry

# The commented example configuration, installed with relaybox.
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "relaybox.example.toml"

OPENAI_MODELS = (
    ModelEntry("gpt-4o-mini", "economy", context_window=128_000),
    ModelEntry("gpt-4.1-mini", "economy", context_window=1_047_576),
    ModelEntry("gpt-4o", "standard", context_window=128_000),
    ModelEntry("gpt-4.1", "standard", context_window=1_047_576),
    ModelEntry("o3", "premium", context_window=200_000),
)

ANTHROPIC_MODELS = (
    ModelEntry("claude-haiku-4-5", "economy", context_window=200_000),
    ModelEntry("claude-sonnet-4-5", "standard", context_window=200_000),
    ModelEntry("claude-opus-4-5", "premium", context_window=200_000),
)

GEMINI_MODELS = (
    ModelEntry("gemini-2.5-flash-lite", "economy", context_window=1_048_576),
    ModelEntry("gemini-2.5-flash", "economy", context_window=1_048_576),
    ModelEntry("gemini-2.5-pro", "standard", context_window=1_048_576),
)

OPENROUTER_MODELS = (
    ModelEntry("openai/gpt-4o-mini", "economy", context_window=128_000),
    ModelEntry("anthropic/claude-sonnet-4.5", "standard", context_window=200_000),
    ModelEntry("google/gemini-2.5-flash", "economy", context_window=1_048_576),
)


OPENAI_IMAGE_MODELS = (
    ModelEntry("gpt-image-1", "standard"),  # token-priced: genai-prices has it
    ModelEntry("dall-e-3", "standard", per_image=0.04),  # standard quality, 1024x1024
    ModelEntry("dall-e-2", "economy", per_image=0.02),
)

OPENROUTER_IMAGE_MODELS = (ModelEntry("google/gemini-2.5-flash-image", "standard"),)

# Embedding models, priced per million input tokens (they have no output).
OPENAI_EMBEDDING_MODELS = (
    ModelEntry("text-embedding-3-small", "economy", 0.02, 0.0, 8191),
    ModelEntry("text-embedding-3-large", "standard", 0.13, 0.0, 8191),
    ModelEntry("text-embedding-ada-002", "economy", 0.10, 0.0, 8191),
)
GEMINI_EMBEDDING_MODELS = (ModelEntry("gemini-embedding-001", "economy", 0.15, 0.0, 2048),)
OPENROUTER_EMBEDDING_MODELS = (ModelEntry("openai/text-embedding-3-small", "economy", 0.02, 0.0, 8191),)


@attrs.frozen
class BuiltinApi:
    """A well-known API provider: enabled by its key in the environment (or a TOML section)."""

    name: str
    kind: str
    display_name: str
    key_env: str
    base_env: str
    default_base: str
    models: tuple[ModelEntry, ...]
    default_model: str
    prefixes: tuple[str, ...]
    image_models: tuple[ModelEntry, ...] = ()
    image_api: str = "images"
    embedding_models: tuple[ModelEntry, ...] = ()


BUILTIN_APIS = (
    BuiltinApi(
        "openai",
        "openai-compatible",
        "OpenAI",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1",
        OPENAI_MODELS,
        "gpt-4o-mini",
        ("gpt-", "o1", "o3", "o4", "chatgpt-"),
        image_models=OPENAI_IMAGE_MODELS,
        embedding_models=OPENAI_EMBEDDING_MODELS,
    ),
    BuiltinApi(
        "anthropic",
        "anthropic",
        "Anthropic",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "https://api.anthropic.com",
        ANTHROPIC_MODELS,
        "claude-haiku-4-5",
        ("claude-",),
    ),
    BuiltinApi(
        "gemini",
        "gemini",
        "Google Gemini",
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        "https://generativelanguage.googleapis.com",
        GEMINI_MODELS,
        "gemini-2.5-flash",
        ("gemini-",),
        embedding_models=GEMINI_EMBEDDING_MODELS,
    ),
    BuiltinApi(
        "openrouter",
        "openai-compatible",
        "OpenRouter",
        "OPENROUTER_API_KEY",
        "OPENROUTER_BASE_URL",
        "https://openrouter.ai/api/v1",
        OPENROUTER_MODELS,
        "openai/gpt-4o-mini",
        ("openai/", "anthropic/", "google/", "meta-llama/", "mistralai/", "deepseek/", "qwen/", "x-ai/"),
        image_models=OPENROUTER_IMAGE_MODELS,
        image_api="chat",
        embedding_models=OPENROUTER_EMBEDDING_MODELS,
    ),
)

GEMINI_CLI_MODELS = (
    ModelEntry("gemini-2.5-flash", "economy", context_window=1_048_576),
    ModelEntry("gemini-2.5-pro", "standard", context_window=1_048_576),
)

# The CLI resolves these aliases to the current model of each family itself.
CLAUDE_CLI_MODELS = (
    ModelEntry("haiku", "economy", context_window=200_000),
    ModelEntry("sonnet", "standard", context_window=200_000),
    ModelEntry("opus", "premium", context_window=200_000),
)


@attrs.frozen
class BuiltinCli:
    """A CLI provider: found on PATH (or at `path_env`), one process per request. A CLI provider's
    kind is its name."""

    name: str
    binary: str
    path_env: str  # where the executable is, when not on PATH
    package: str  # the npm package that installs it
    display_name: str
    models: tuple[ModelEntry, ...]
    default_model: str
    prefixes: tuple[str, ...]
    slots: int  # 0: one per core, at least 2
    mailbox: int
    timeout_env: str
    timeout: float  # seconds without progress before an attempt is abandoned
    # Processes started ahead of time, by default (None: this CLI has no warm pool, and a `warm`
    # setting in its section is not read).
    warm: int | None = None
    system_prompts: bool = False  # `system_prompt = replace | append | inline` applies


BUILTIN_CLIS = (
    BuiltinCli(
        "claude-cli",
        "claude",
        "CLAUDE_CLI_PATH",
        "@anthropic-ai/claude-code",
        "Claude (CLI)",
        CLAUDE_CLI_MODELS,
        "sonnet",
        ("claude-",),
        # A request costs the CLI about 0.9 s of CPU (`python -m bench.cli_concurrency`): past one
        # process per core requests/s stop growing and time to first token doubles with each step.
        slots=0,
        mailbox=16,
        timeout_env="TIMEOUT_CLAUDE",
        timeout=60,
        warm=1,
        system_prompts=True,
    ),
    BuiltinCli(
        "gemini-cli",
        "gemini",
        "GEMINI_CLI_PATH",
        "@google/gemini-cli",
        "Gemini (CLI)",
        GEMINI_CLI_MODELS,
        "gemini-2.5-flash",
        ("gemini-",),
        # Each spawn costs about 3 s of CPU: two at a time on a small machine.
        slots=2,
        mailbox=8,
        timeout_env="TIMEOUT_GEMINI",
        timeout=120,
    ),
)
