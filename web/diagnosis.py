"""Seed 000's connection-test messages: what went wrong with a provider, and the one thing to do.

The failure arrives as relaybox's error text for the pinned test request, in which `final_error`
writes the attempt as "provider/model: kind: message". The diagnosis goes by that failure kind
first and reads the upstream's own words only within it: "upstream refused the request" means the
server answered, so it must not read as a refused connection, and every error text names the model,
so only the upstream's message can say the model is unknown.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from relaybox.protocol.errors import FailureKind
from relaybox.web.config import ProviderConfig
from relaybox.web.config.catalogue import BUILTIN_APIS

# A built-in API's key variable: what a refused key's diagnosis names when the configuration does
# not say where the key was read (`ProviderConfig.api_key_from`).
KEY_VARIABLES = {api.name: api.key_env for api in BUILTIN_APIS}
INSTALL = {
    "claude-cli": "npm install -g @anthropic-ai/claude-code",
    "gemini-cli": "npm install -g @google/gemini-cli",
}
LOGIN = {
    "claude-cli": "claude /login  (or `claude setup-token` and set CLAUDE_CODE_OAUTH_TOKEN)",
    "gemini-cli": "gemini  (log in once, interactively)",
}
ATTEMPT = re.compile(
    rf": (?P<kind>{'|'.join(k.value for k in FailureKind)}): (?P<message>.*?)\)?$", re.DOTALL
)
# An npm-installed CLI is a node script: `#!/usr/bin/env node` fails when node is not on relaybox's
# PATH (a service's PATH often lacks the folder nvm put node in).
NODE_MISSING = re.compile(r"env: \W?node\W?: no such file", re.IGNORECASE)
UNRESOLVED = ("name or service not known", "nodename nor servname", "getaddrinfo", "name resolution")
UNREACHABLE = ("connecterror", "connection refused", "all connection attempts failed")


def read_failure(failure: str) -> tuple[FailureKind | None, str]:
    """The attempt's failure kind and the upstream's message. `check_connection` reports its own
    deadline as the bare word "timeout"; any other text without an attempt has no kind."""
    if failure == "timeout":
        return FailureKind.TIMEOUT, failure
    attempt = ATTEMPT.search(failure)
    if attempt is None:
        return None, failure
    return FailureKind(attempt["kind"]), attempt["message"]


def diagnose(config: ProviderConfig, failure: str) -> str:
    """An actionable line for a failed connection test; `failure` is relaybox's error text."""
    kind, message = read_failure(failure)
    if config.kind in INSTALL:
        return diagnose_cli(config, kind, message)
    return diagnose_http(config, kind, message)


def diagnose_cli(config: ProviderConfig, kind: FailureKind | None, message: str) -> str:
    binary = "claude" if config.kind == "claude-cli" else "gemini"
    if "cannot start" in message.lower():
        return f"❌ The {binary} CLI is not installed or not executable. Install: {INSTALL[config.kind]}"
    if NODE_MISSING.search(message):
        return (
            f"❌ The {binary} CLI cannot start: Node.js (node) is not on relaybox's PATH. "
            f"Add node's folder to PATH, or reinstall: {INSTALL[config.kind]}"
        )
    if kind is FailureKind.AUTH:
        return f"❌ The {binary} CLI is not logged in or its login expired. Fix: {LOGIN[config.kind]}"
    if kind is FailureKind.TIMEOUT:
        return f"❌ The {binary} CLI is not responding. Test: echo test | {config.executable or binary} -p"
    if kind is FailureKind.RATE_LIMITED:
        return f"❌ The {binary} CLI hit its usage limit: it answered, but refuses work for now. ({message})"
    return f"❌ The {binary} CLI failed: {message[:300]}. Test: echo test | {config.executable or binary} -p"


def diagnose_http(config: ProviderConfig, kind: FailureKind | None, message: str) -> str:
    host = urlsplit(config.base_url).netloc if config.base_url else ""
    text = message.lower()
    # Gemini answers a bad key with 400 INVALID_ARGUMENT "API key not valid", not with a 401.
    if kind is FailureKind.AUTH or (kind is FailureKind.REJECTED and "api key" in text):
        key = config.api_key_from or KEY_VARIABLES.get(
            config.name, f"the apiKey configured for {config.name}"
        )
        return f"❌ The API key was refused. Check {key}."
    if kind is FailureKind.TRANSPORT and any(words in text for words in UNRESOLVED):
        return f"❌ Wrong host: {host} does not resolve. Check the base URL."
    if kind is FailureKind.TRANSPORT and any(words in text for words in UNREACHABLE):
        start = "ollama serve" if config.kind == "ollama" else "the server"
        return f"❌ Connection refused at {host}. Start it ({start}) or check the base URL."
    if kind is FailureKind.TIMEOUT:
        return f"❌ Connection timeout talking to {host}. Is it running and reachable from here?"
    if kind is FailureKind.RATE_LIMITED:
        return "❌ Rate limited or out of quota: the provider answered, but refuses work for now."
    if kind is FailureKind.REJECTED and text.startswith("http 404"):
        return diagnose_not_found(config, host, message)
    if kind is FailureKind.SERVER_ERROR:
        return f"❌ {host} answered with a server error ({message[:200]}). Try again later."
    if kind is FailureKind.REJECTED:
        return f"❌ {host} answered but refused the test request: {message[:300]}"
    return f"❌ The test failed: {message[:300]}"


def diagnose_not_found(config: ProviderConfig, host: str, message: str) -> str:
    """A 404 that names the model is a model the server lacks; any other 404 is a path that is
    not an API there, which is a wrong base URL."""
    model = config.default_model
    if model.lower() not in message.lower():
        return f"❌ {host} answered 404 Not Found ({message[:200]}): check the base URL, and its path."
    if config.kind == "ollama":
        return f"❌ Ollama does not have the model {model!r}. Fix: ollama pull {model}"
    return f"❌ The provider answered but does not know the model {model!r}."
