"""A warm pool of CLI processes: started ahead of time, each waiting on stdin for one request.

A Claude CLI start costs most of a second before the first token (node start-up, loading the
CLI, reading the login); a process started earlier and waiting on stdin answers as soon as the
upstream does (`python -m bench.cli_warm_pool`). A process serves one request and exits; a
replacement for the same command line starts in the background, so an agent calling with the
same model and system prompt again finds one ready. The command line is the key: the model and
the system prompt are on it. Only a command line that comes back is worth a replacement (one
that was served from the pool, the pre-warmed one, or one seen recently): a one-off system prompt
starts no speculative process. The pool is bounded (the oldest idle process of another key makes
room), so are the command lines it remembers, idle processes are retired after a while, and all
of them are stopped with the provider.
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from relaybox.actors.transports.cli_process import reap_group, signal_group

Key = tuple[str, ...]


@attrs.define
class _Idle:
    process: trio.Process
    born: float


@attrs.frozen
class WarmPoolStatistics:
    size: int
    idle: int  # processes waiting for a request
    starting: int
    hits: int  # requests served by a waiting process
    misses: int  # requests that had to start one
    started: int
    retired: int  # idle too long, evicted for room, or found dead


class WarmPool:
    def __init__(
        self,
        size: int,
        spawn: Callable[[Key], Awaitable[trio.Process]],
        *,
        idle_seconds: float = 600.0,
    ) -> None:
        self.size = size
        self.idle_seconds = idle_seconds
        self._spawn_process = spawn
        self._idle: dict[Key, list[_Idle]] = {}
        self._seen: collections.OrderedDict[Key, None] = collections.OrderedDict()  # recent misses
        self._prewarm: Key | None = None
        self._starting = 0
        self._nursery: trio.Nursery | None = None
        self.hits = 0  # requests served by a waiting process
        self.misses = 0  # requests that had to start one
        self.started = 0
        self.retired = 0  # idle too long, evicted for room, or found dead

    def statistics(self) -> WarmPoolStatistics:
        return WarmPoolStatistics(
            size=self.size,
            idle=sum(len(v) for v in self._idle.values()),
            starting=self._starting,
            hits=self.hits,
            misses=self.misses,
            started=self.started,
            retired=self.retired,
        )

    async def run(self, *, prewarm: Key | None = None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool until cancelled, then stop every waiting process."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._prewarm = prewarm
                if prewarm is not None:
                    self.replenish(prewarm)
                task_status.started()
                while True:
                    await trio.sleep(min(60.0, self.idle_seconds / 2))
                    self._retire_old()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                for idle in [i for waiting in self._idle.values() for i in waiting]:
                    await reap_group(idle.process)
                self._idle.clear()

    def take(self, key: Key) -> trio.Process | None:
        """A waiting process for this command line, if one is alive."""
        waiting = self._idle.get(key, [])
        while waiting:
            idle = waiting.pop()
            if idle.process.poll() is None:
                self.hits += 1
                self._forget_if_empty(key)
                return idle.process
            self.retired += 1
        self._forget_if_empty(key)
        self.misses += 1
        return None

    def worth_replacing(self, key: Key, hit: bool) -> bool:
        """Whether to start a process for this command line ahead of its next request: after a hit,
        for the pre-warmed command line, or when it was seen recently (it comes back)."""
        seen = key in self._seen
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > max(8, 4 * self.size):
            self._seen.popitem(last=False)
        return hit or seen or key == self._prewarm

    def replenish_if_quiet(self, key: Key) -> bool:
        """Start a replacement now unless others are starting: on a small machine a burst of
        starts competes for the CPU with the requests it is meant to speed up. False: the
        caller replenishes once its request is over."""
        if self._starting:
            return False
        self.replenish(key)
        return True

    def replenish(self, key: Key) -> None:
        """Start a process for this command line in the background (after one was used)."""
        if self.size <= 0 or self._nursery is None:
            return
        self._nursery.start_soon(self._start, key)

    async def _start(self, key: Key) -> None:
        self._starting += 1
        try:
            process = await self._spawn_process(key)
        except Exception:  # a start that fails now will fail (and say why) when a request tries it
            return
        finally:
            self._starting -= 1
        self.started += 1
        while sum(len(v) for v in self._idle.values()) >= self.size:
            self._evict_oldest()
        self._idle.setdefault(key, []).append(_Idle(process, trio.current_time()))

    def _evict_oldest(self) -> None:
        key, index = min(
            ((k, i) for k, waiting in self._idle.items() for i in range(len(waiting))),
            key=lambda ki: self._idle[ki[0]][ki[1]].born,
        )
        self._retire(self._idle[key].pop(index))
        self._forget_if_empty(key)

    def _retire_old(self) -> None:
        now = trio.current_time()
        for key, waiting in list(self._idle.items()):
            for idle in [i for i in waiting if now - i.born > self.idle_seconds]:
                waiting.remove(idle)
                self._retire(idle)
            self._forget_if_empty(key)

    def _forget_if_empty(self, key: Key) -> None:
        if not self._idle.get(key, True):
            del self._idle[key]

    def _retire(self, idle: _Idle) -> None:
        self.retired += 1
        signal_group(idle.process, signal.SIGTERM)
        if self._nursery is not None:
            self._nursery.start_soon(reap_group, idle.process)
