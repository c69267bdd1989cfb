"""ReadBatch: reads asked for at the same moment are fetched together; a failure reaches every caller."""

from __future__ import annotations

import asyncio

import pytest

from membot.agent.store.read_batch import ReadBatch


async def test_keys_asked_for_together_are_fetched_in_one_call_and_each_caller_gets_its_own():
    calls: list[list[int]] = []

    async def fetch(keys: list[int]) -> dict[int, str]:
        calls.append(keys)
        await asyncio.sleep(0)
        return {key: f"v{key}" for key in keys if key != 3}

    batch: ReadBatch[int, str] = ReadBatch(fetch, max_keys=2)
    got = await asyncio.gather(*(batch.get(key) for key in (1, 2, 2, 3)))
    assert got == ["v1", "v2", "v2", None]  # the same key twice is fetched once; a missing one is None
    assert calls == [[1, 2], [3]]  # at most max_keys per fetch
    assert await batch.get(4) == "v4" and calls[-1] == [4]  # alone, a key is fetched by itself


async def test_a_bad_key_fails_only_its_callers_and_a_cancelled_caller_leaves_the_rest():
    release = asyncio.Event()

    async def fetch(keys: list[int]) -> dict[int, int]:
        await release.wait()
        if 0 in keys:
            raise OSError("disk gone")
        return {key: key for key in keys}

    batch: ReadBatch[int, int] = ReadBatch(fetch)
    first = [asyncio.ensure_future(batch.get(key)) for key in (0, 0, 1)]
    await asyncio.sleep(0.01)
    working = [asyncio.ensure_future(batch.get(key)) for key in (5, 6)]
    await asyncio.sleep(0.01)
    working[0].cancel()
    release.set()
    for task in first[:2]:  # both callers of the bad key hear of it
        with pytest.raises(OSError, match="disk gone"):
            await task
    assert await first[2] == 1  # fetched again on its own
    with pytest.raises(asyncio.CancelledError):
        await working[0]
    assert await working[1] == 6


async def test_when_a_key_is_cancelled_in_the_retry_the_other_keys_still_get_their_answers():
    async def fetch(keys: list[int]) -> dict[int, str]:
        await asyncio.sleep(0)
        if len(keys) > 1:
            raise OSError("the batch failed")
        if keys == [2]:
            raise asyncio.CancelledError  # e.g. its read was cancelled as the loop shut down
        return {keys[0]: f"v{keys[0]}"}

    batch: ReadBatch[int, str] = ReadBatch(fetch)
    got = await asyncio.wait_for(asyncio.gather(*(batch.get(key) for key in (1, 2, 3)), return_exceptions=True), 2)
    assert got[0] == "v1" and isinstance(got[1], asyncio.CancelledError) and got[2] == "v3"


async def test_what_a_fetch_found_is_handed_out_a_few_callers_per_turn_of_the_loop():
    async def fetch(keys: list[int]) -> dict[int, int]:
        return {key: key for key in keys}

    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    async def caller(key: int) -> tuple[int, int]:
        value = await batch.get(key)
        return value or 0, turns  # the turn it woke in

    batch: ReadBatch[int, int] = ReadBatch(fetch, hand_out=8)
    ticker = asyncio.ensure_future(count_turns())
    woke = await asyncio.gather(*(caller(key) for key in range(20)))
    ticker.cancel()
    assert [value for value, _ in woke] == list(range(20))  # all of them, each its own
    # Fetched once, woken 8, 8 and 4 to a turn, in the order they asked; the loop turned in between.
    first, second, third = sorted({turn for _, turn in woke})
    assert [turn for _, turn in woke] == [first] * 8 + [second] * 8 + [third] * 4


async def test_callers_still_waiting_when_the_fetch_is_cancelled_are_cancelled_too():
    async def fetch(keys: list[int]) -> dict[int, int]:
        return {key: key for key in keys}

    async def cancel_fetch_after(turns: int) -> list[object]:
        callers = [asyncio.ensure_future(batch.get(key)) for key in range(5)]
        for _ in range(turns):
            await asyncio.sleep(0)
        assert batch._running
        for task in list(batch._running):  # what a loop shutting down does to the tasks still running
            task.cancel()
        return await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 2)

    batch: ReadBatch[int, int] = ReadBatch(fetch, hand_out=2)
    # Before the fetch ran: every caller hears of it (none is left waiting for ever).
    assert all(isinstance(got, asyncio.CancelledError) for got in await cancel_fetch_after(2))
    # While handing out: the ones handed their answer keep it, the rest are cancelled.
    got = await cancel_fetch_after(3)
    assert got[0] == 0 and isinstance(got[-1], asyncio.CancelledError)
    assert all(value == key or isinstance(value, asyncio.CancelledError) for key, value in enumerate(got))
