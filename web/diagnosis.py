"""Seed 000's connection-test messages: what went wrong with a provider, and the one thing to do."""

from __future__ import annotations

from urllib.parse import urlsplit

from relaybox.web.config import ProviderConfig

KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}
INSTALL = {
    "claude-cli": "npm install -g @anthropic-ai/claude-code",
    "gemini-cli": "npm install -g @google/gemini-cli",
}
LOGIN = {
    "claude-cli": "claude /login  (or `claude setup-token` and set CLAUDE_CODE_OAUTH_TOKEN)",
    "gemini-cli": "gemini  (log in once, interactively)",
}


def diagnose(config: ProviderConfig, failure: str) -> str:
    """An actionable line for a failed connection test; `failure` is relaybox's error text."""
    text = failure.lower()
    host = urlsplit(config.base_url).netloc if config.base_url else ""
    cli = config.kind in ("claude-cli", "gemini-cli")
    binary = "claude" if config.kind == "claude-cli" else "gemini"
    if cli and ("cannot start" in text or "no such file" in text):
        return f"❌ The {binary} CLI is not installed or not executable. Install: {INSTALL[config.kind]}"
    if "auth" in text or "401" in text or "403" in text or "login" in text:
        if cli:
            return f"❌ The {binary} CLI is not logged in or its login expired. Fix: {LOGIN[config.kind]}"
        key = KEY_VARIABLES.get(config.name, "the provider's apiKey")
        return f"❌ The API key was refused. Check {key}."
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return f"❌ Wrong host: {host} does not resolve. Check the base URL."
    if "refused" in text or "connecterror" in text or "all connection attempts failed" in text:
        start = "ollama serve" if config.kind == "ollama" else "the server"
        return f"❌ Connection refused at {host}. Start it ({start}) or check the base URL."
    if "timeout" in text or "timed out" in text or "no progress" in text:
        if cli:
            return f"❌ The {binary} CLI is not responding. Test: echo test | {binary} -p"
        return f"❌ Connection timeout talking to {host}. Is it running and reachable from here?"
    if "rate_limited" in text or "429" in text:
        return "❌ Rate limited or out of quota: the provider answered, but refuses work for now."
    if "404" in text or "not found" in text:
        return f"❌ The provider answered but does not know the model {config.default_model!r}."
    return f"❌ The test failed: {failure[:300]}"
