"""Reads asked for at the same moment, done together (see ReadBatch)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadBatch(Generic[K, V]):
    """`get(key)` calls made in the same turn of the event loop become one `fetch(keys)`.

    When a busy bot starts, its first messages ask for hundreds of agents at once. Read one by one, each costs
    a database thread's turn and a few statements; read together, a few set-based statements serve them all.
    Alone, a key is fetched by itself, at once (one turn of the loop later). A fetch that fails for several keys
    is tried again key by key, so that one bad key fails only its own callers."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], max_keys: int = 500) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()  # held, so that no fetch is collected mid-way

    async def get(self, key: K) -> V | None:
        """What `fetch` found for `key`, or None if it found nothing."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            # After the callbacks already due in this turn: every task woken with this one asks first.
            loop.call_soon(self._flush)
        future: asyncio.Future[V | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        keys = list(waiting)
        for start in range(0, len(keys), self._max_keys):
            part = {key: waiting[key] for key in keys[start : start + self._max_keys]}
            task = asyncio.ensure_future(self._serve(part))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _serve(self, part: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch(list(part))
        except Exception as exc:
            if len(part) > 1:
                # One bad key (an unreadable row, say) fails only its own callers: each is fetched again alone,
                # all at once. Each settles its own callers, whatever happens to the others.
                await asyncio.gather(*(self._serve({key: futures}) for key, futures in part.items()),
                                     return_exceptions=True)
                return
            _settle(part, exc)
            return
        except BaseException as exc:  # cancelled (the loop shutting down): so are those waiting
            _settle(part, exc)
            raise
        for key, futures in part.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))


def _settle(part: dict[Any, list[asyncio.Future[Any]]], exc: BaseException) -> None:
    for futures in part.values():
        for future in futures:
            if future.done():  # its caller was cancelled
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
