"""What a handler reaches through the app it serves: the request pipeline (and through it the
running system), and the guard."""

from __future__ import annotations

from quart import current_app
from relaybox.web.access_log import AccessLog
from relaybox.web.guard import Guard
from relaybox.web.pipeline import RequestPipeline
from relaybox.web.system import System

PIPELINE = "relaybox.pipeline"
GUARD = "relaybox.guard"
ACCESS_LOG = "relaybox.access_log"


def current_pipeline() -> RequestPipeline:
    return current_app.extensions[PIPELINE]


def current_system() -> System:
    return current_pipeline().system


def current_guard() -> Guard:
    return current_app.extensions[GUARD]


def current_access_log() -> AccessLog:
    return current_app.extensions[ACCESS_LOG]
