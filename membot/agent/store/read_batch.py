"""Reads asked for at the same moment, done together (see ReadBatch)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadBatch(Generic[K, V]):
    """`get(key)` calls made in the same turn of the event loop become one `fetch(keys)`.

    When a busy bot starts, its first messages ask for hundreds of agents at once. Read one by one, each costs
    a database thread's turn and a few statements; read together, a few set-based statements serve them all.
    Alone, a key is fetched by itself, at once (one turn of the loop later). A fetch that fails for several keys
    is tried again key by key, so that one bad key fails only its own callers.

    What a fetch found is handed out `hand_out` keys per turn of the loop. Woken all in one turn, 200 callers
    ran their whole start (a step up to its model request) before the loop looked at a socket again: no request
    left, nor a connection opened, for 130 ms, and then all of them left at once and their answers came back as
    one herd. A few per turn, the first callers' requests are out while the later ones are still being woken.
    """

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], max_keys: int = 500, hand_out: int = 8
    ) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._hand_out = max(1, hand_out)
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
            # Cancelled (the loop shutting down) before it ran, or while handing out: nobody is left waiting.
            task.add_done_callback(partial(_settle_if_cancelled, part))

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
        keys = list(part)
        for start in range(0, len(keys), self._hand_out):
            if start:
                await asyncio.sleep(0)  # the loop's turn: sockets, and the callers woken so far
            for key in keys[start : start + self._hand_out]:
                for future in part[key]:
                    if not future.done():
                        future.set_result(found.get(key))


def _settle_if_cancelled(part: dict[Any, list[asyncio.Future[Any]]], task: asyncio.Task[None]) -> None:
    if task.cancelled():
        _settle(part, asyncio.CancelledError())


def _settle(part: dict[Any, list[asyncio.Future[Any]]], exc: BaseException) -> None:
    for futures in part.values():
        for future in futures:
            if future.done():  # its caller was cancelled
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
