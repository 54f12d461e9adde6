"""What a handler reaches through the app it serves: the request pipeline (and through it the
running system), and the guard."""

from __future__ import annotations

from quart import current_app
from relaybox.web.guard import Guard
from relaybox.web.pipeline import RequestPipeline
from relaybox.web.system import System

PIPELINE = "relaybox.pipeline"
GUARD = "relaybox.guard"


def current_pipeline() -> RequestPipeline:
    return current_app.extensions[PIPELINE]


def current_system() -> System:
    return current_pipeline().system


def current_guard() -> Guard:
    return current_app.extensions[GUARD]
