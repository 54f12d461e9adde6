"""The request pipeline (and through it the running system) of the app a handler serves."""

from __future__ import annotations

from quart import current_app
from relaybox.web.pipeline import RequestPipeline
from relaybox.web.system import System

PIPELINE = "relaybox.pipeline"


def current_pipeline() -> RequestPipeline:
    return current_app.extensions[PIPELINE]


def current_system() -> System:
    return current_pipeline().system
