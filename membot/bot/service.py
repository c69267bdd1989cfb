"""The bot service: the one API every adapter talks to. It knows users, agents and commands; adapters know
platforms; the engine knows memory.

Messages to one agent are handled one at a time: a lock per agent in this process, and the agent's lease across
processes (see agent/store/leases.py); different agents run concurrently. Loaded agents are kept in a bounded
cache, and loaded again on demand or when another process changed them since.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session

from membot.agent import prompts
from membot.agent.agent import Agent, MemoryReport
from membot.agent.engine import Engine
from membot.agent.events import ErrorMessage, Event
from membot.agent.memory.said_in import said_in
from membot.agent.messages import describe, format_time
from membot.agent.place import PRIVATE, Place
from membot.agent.store import wakeups
from membot.agent.store.leases import AgentBusy, NoSuchAgent
from membot.agent.store.schema import utcnow
from membot.agent.store.seen import claim, forget_old
from membot.bot import heartbeats
from membot.bot.errors import BUSY_COMMAND, CommandError
from membot.bot.identity import UserRef, create_linked, find_agent, owner
from membot.bot.ownership import MemoryOwnership
from membot.bot.quotas import Quotas
from membot.bot.settings import Settings
from membot.bot.slots import KeyedSlots
from membot.bot.source_commands import SourceCommands
from membot.bot.threads import Threads

log = logging.getLogger(__name__)
audit = logging.getLogger("membot.audit")

MAX_MESSAGE_CHARS = 200_000
#: Every so many event claims, a process forgets the keys too old to be redelivered.
PRUNE_EVERY = 500
CRASHED = "Sorry, something went wrong on my side while answering. Please try again."
CANCELLING = "Stopping your agent's current reply after its current model call; what it did so far is kept."
NOTHING_RUNNING = "Nothing is running for you right now."
BUSY = "Sorry, I'm still busy with an earlier message of yours. Your new one was not taken; send it again in a minute."


#: How an adapter delivers a step its user did not start (a reminder, a timed heartbeat) privately to them.
Outlet = Callable[[UserRef, AsyncIterator[Event]], Awaitable[None]]


class BotService(SourceCommands, MemoryOwnership):
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._agents: OrderedDict[int, Agent] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}
        self._user_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._resolve_lock = asyncio.Lock()
        #: A user's uploads read at once are few: parsing a file is the costly part of loading it.
        self._uploads = KeyedSlots()
        #: user -> agent id, as linked in SQL. A link is never changed once made, so this can only go stale by
        #: forgetting; bounded like the agent cache, it saves a query on every message.
        self._linked: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._claims = 0
        #: platform -> how its adapter reaches a user privately; adapters add theirs when they start.
        self.outlets: dict[str, Outlet] = {}
        self.quotas = Quotas(engine.db, settings.user_messages_per_minute, settings.user_tokens_per_day)
        #: The platform threads users talk with the bot in (their messages there need no mention).
        self.threads = Threads(engine.db)

    @classmethod
    async def open(cls, settings: Settings) -> BotService:
        return cls(settings, await Engine.open(settings.engine_config()))

    async def close(self) -> None:
        await self.engine.close()

    # ----- identity and the agent cache ------------------------------------------------------------------

    async def agent_id(self, user: UserRef, persona: str | None = None, human: str | None = None) -> tuple[int, bool]:
        """The user's agent, created on first contact. Returns (agent id, created)."""
        linked = self._linked.get(user.key)
        if linked is not None:
            self._linked.move_to_end(user.key)
            return linked, False
        found = await find_agent(self.engine.db, user)
        if found is not None:
            return self._remember(user, found), False
        async with self._resolve_lock:
            found = await find_agent(self.engine.db, user)
            if found is not None:
                return self._remember(user, found), False
            try:
                create = self.engine.new_agent(
                    user.label, persona or self.settings.default_persona, human or self.settings.default_human
                )
            except prompts.UnknownPrompt as exc:
                raise CommandError(str(exc)) from None
            agent_id, created = await create_linked(self.engine.db, user, create)
            return self._remember(user, agent_id), created

    def _remember(self, user: UserRef, agent_id: int) -> int:
        self._linked[user.key] = agent_id
        while len(self._linked) > self.settings.agent_cache_size:
            self._linked.popitem(last=False)
        return agent_id

    def _lock(self, agent_id: int) -> asyncio.Lock:
        return self._locks.setdefault(agent_id, asyncio.Lock())

    async def _agent(self, agent_id: int, version: int) -> Agent:
        """The agent at `version` (as its lease was taken): the cached one, unless another process changed it."""
        agent = self._agents.get(agent_id)
        if agent is not None and agent.row.version != version:
            agent = None
        if agent is None:
            agent = await self.engine.load_agent(agent_id)
            self._agents[agent_id] = agent
            while len(self._agents) > self.settings.agent_cache_size:
                oldest = next(iter(self._agents))
                if self._lock(oldest).locked():  # in use: it stays until the next load
                    break
                self._agents.pop(oldest)
        self._agents.move_to_end(agent_id)
        return agent

    def _drop(self, agent_id: int) -> None:
        """Forget the cached agent, so that it is loaded afresh from what was committed."""
        self._agents.pop(agent_id, None)

    @asynccontextmanager
    async def using(self, agent_id: int) -> AsyncIterator[Agent]:
        """The agent, held exclusively across processes (its steps never interleave) and up to date: what a
        command reads or changes of its memory follows everything it was told."""
        async with self._lock(agent_id):
            try:
                async with self.engine.leases.hold(agent_id) as version:
                    try:
                        yield await self._agent(agent_id, version)
                    except BaseException:
                        self._drop(agent_id)  # it may be ahead of what was committed
                        raise
            except AgentBusy:
                raise CommandError(BUSY_COMMAND) from None

    async def claim_event(self, key: str) -> bool:
        """True for the first of the bot's processes to take platform event `key` (see store/seen.py)."""
        now, self._claims = utcnow(), self._claims + 1
        prune = self._claims % PRUNE_EVERY == 0

        def work(session: Session) -> bool:
            if prune:
                forget_old(session, now)
            return claim(session, key, now)

        return await self.engine.db.write(work)

    # ----- conversation ----------------------------------------------------------------------------------

    async def chat(self, user: UserRef, text: str, place: Place = PRIVATE) -> AsyncIterator[Event]:
        """Hand a user's message, said in `place`, to their agent; yields the step's events in order. A step in a
        shared channel sees nothing said privately (agent/place.py): adapters name the place of every message."""
        if len(text) > MAX_MESSAGE_CHARS:
            # Kept whole up to a sane bound; the context window cuts further (and says so to the model).
            text = text[:MAX_MESSAGE_CHARS] + f"\n[… {len(text) - MAX_MESSAGE_CHARS} characters cut]"
        # The user's lock is taken before anything else awaits, so their messages keep their arrival order
        # (asyncio locks are fair) even while the agent is still being looked up or created.
        async with self._user_locks.setdefault(user.key, asyncio.Lock()):
            for fresh in (False, True):
                agent_id, _ = await self.agent_id(user)
                await self.quotas.admit(agent_id)  # QuotaReached: the adapter tells the user privately
                step = self._run(agent_id, lambda agent: agent.user_message(text, user.display_name or None, place),
                                 gone=not fresh)
                try:
                    async with aclosing(step) as events:
                        async for event in events:
                            yield event
                    break
                except NoSuchAgent:
                    # Another process deleted or replaced the agent this one had linked (forget, import): the
                    # user's agent is looked up (or made) afresh, and the message goes to it.
                    self._unlink(user, agent_id)
            await self.after_conversation(agent_id)

    async def cancel(self, user: UserRef) -> str:
        """Ask the user's running step (in any process) to stop after its current model call; what to tell them."""
        agent_id = self._linked.get(user.key) or await find_agent(self.engine.db, user)
        if agent_id is None or not await self.engine.leases.request_cancel(agent_id):
            return NOTHING_RUNNING
        return CANCELLING

    async def login(self, user: UserRef, persona: str | None = None, human: str | None = None) -> AsyncIterator[Event]:
        agent_id, _ = await self.agent_id(user, persona, human)
        async with aclosing(self._run(agent_id, lambda agent: agent.login())) as events:
            async for event in events:
                yield event

    async def notify(self, agent_id: int, text: str) -> AsyncIterator[Event]:
        """A system event for the agent (an attached source, an upload)."""
        async with aclosing(self._run(agent_id, lambda agent: agent.system_event(text, kind="system_event"))) as events:
            async for event in events:
                yield event

    async def wake(self, agent_id: int, text: str, kind: str = wakeups.HEARTBEAT) -> AsyncIterator[Event]:
        """A scheduled wake-up (a timed heartbeat, a reminder it set: see bot/scheduler.py) as an event for the
        agent, through a normal step; its tokens count against the user's daily quota as any step's do."""
        if kind == wakeups.HEARTBEAT:
            start: Callable[[Agent], AsyncIterator[Event]] = lambda agent: agent.heartbeat(text)  # noqa: E731
        else:
            start = lambda agent: agent.system_event(text, kind=kind)  # noqa: E731
        async with aclosing(self._run(agent_id, start)) as events:
            async for event in events:
                yield event

    async def deliver_wakeup(self, agent_id: int, events: AsyncIterator[Event]) -> None:
        """A wake-up's step, to its user through their platform's outlet (the scheduler's `deliver`). Without
        one the step still runs (its memory edits count), and what it would have sent is logged."""
        who = await owner(self.engine.db, agent_id)
        outlet = self.outlets.get(who.platform) if who is not None else None
        if who is not None and outlet is not None:
            await outlet(who, events)
            return
        await undelivered(events, f"agent {agent_id} (no way to reach its user here)")

    async def schedule_heartbeat(self, agent_id: int, now: datetime | None = None) -> None:
        """With timed heartbeats on, the agent's next one: MEMBOT_HEARTBEAT_MINUTES after `now` (its last
        activity)."""
        await self._schedule(agent_id, now or utcnow(), reflection=False)

    async def after_conversation(self, agent_id: int) -> None:
        """The user just talked: the next timed heartbeat counts from now, and so does the reflection once the
        conversation rests (MEMBOT_REFLECT_AFTER_MINUTES): one per quiet spell, set again only by new talk."""
        await self._schedule(agent_id, utcnow(), reflection=True)

    async def _schedule(self, agent_id: int, now: datetime, *, reflection: bool) -> None:
        """The agent's next heartbeat (and reflection), in one unit of work; nothing when both are off."""
        beat, rest = self.settings.heartbeat_minutes, self.settings.reflect_after_minutes if reflection else None
        if beat is None and rest is None:
            return

        def work(session: Session) -> None:
            if beat is not None:
                wakeups.set_heartbeat(session, agent_id, now + timedelta(minutes=beat), now)
            if rest is not None:
                wakeups.set_reflection(session, agent_id, now + timedelta(minutes=rest), now)

        await self.engine.db.write(work)
        self.engine.wakeups.announce()

    async def _run(
        self, agent_id: int, start: Callable[[Agent], AsyncIterator[Event]], *, gone: bool = False
    ) -> AsyncIterator[Event]:
        """The step `start` makes, under the agent's lock and lease. `gone`: an agent deleted meanwhile raises
        NoSuchAgent (before any event) for the caller to look its user up again; else it is a failed step."""
        async with self._lock(agent_id):
            closing = False  # the listener stopped early: nothing more may be yielded
            try:
                async with self.engine.leases.hold(agent_id) as version:
                    agent = await self._agent(agent_id, version)
                    # Closed here, under the agent's lease: a step that ends early finishes before the next
                    # step of this agent can start.
                    async with aclosing(start(agent)) as events:
                        async for event in events:
                            try:
                                yield event
                            except GeneratorExit:
                                closing = True
                                raise
            except AgentBusy:
                log.warning("agent %s: busy in another process for too long", agent_id)
                if not closing:
                    yield ErrorMessage(agent_id, BUSY)
            except NoSuchAgent:
                self._drop(agent_id)
                if gone:
                    raise
                if not closing:
                    yield ErrorMessage(agent_id, CRASHED)
            except Exception:
                # The agent never crashes the bot: report, and load it afresh from what was committed.
                log.exception("agent %s failed during a step", agent_id)
                self._drop(agent_id)
                if not closing:
                    yield ErrorMessage(agent_id, CRASHED)
            except BaseException:
                # Cancelled or closed mid-step: what the agent holds in memory may be ahead of what was
                # committed, so it is loaded afresh next time.
                self._drop(agent_id)
                raise

    # ----- commands --------------------------------------------------------------------------------------

    def personas(self) -> list[str]:
        return prompts.available("personas")

    async def set_persona(self, user: UserRef, name: str) -> str:
        name = (name or "").strip()
        if not name:
            raise CommandError(f"Name a persona: {', '.join(self.personas())}.")
        agent_id, _ = await self.agent_id(user)
        async with self.using(agent_id) as agent:
            try:
                await agent.set_persona(name)
            except prompts.UnknownPrompt as exc:
                raise CommandError(str(exc)) from None
        return f"Persona set to {name}."

    async def memory(self, requester: UserRef, target: UserRef | None = None, *, is_admin: bool = False) -> MemoryReport:
        """The memory of the requester's own agent, or (admins only) of another user's."""
        own = target is None or target.key == requester.key
        if not own and not is_admin:
            raise CommandError("Only the bot's operators can see another user's memory.")
        who = requester if own else target
        if not own:
            # Every look at someone else's memory leaves a line an operator can audit: who, whose, when.
            audit.warning("memory of %s:%s:%s viewed by %s:%s:%s", *who.key, *requester.key)
        agent_id = await find_agent(self.engine.db, who)
        if agent_id is None:
            if own:
                agent_id, _ = await self.agent_id(requester)
            else:
                raise CommandError(f"{who.display_name or who.user_id} has no agent yet.")
        async with self.using(agent_id) as agent:
            return await agent.report()

    async def said_in(self, requester: UserRef, target: UserRef, prefix: str, where: str, limit: int = 20) -> str:
        """What `target` said in the shared place `prefix` names (a server), for its admins when the operator
        allows it (MEMBOT_GUILD_ADMINS_SEE_GUILD): their own messages there, never DMs, never their agent's
        memory. Audited as any look at someone else's memory."""
        agent_id = await find_agent(self.engine.db, target)
        audit.warning("messages of %s:%s:%s said in %s viewed by %s:%s:%s", *target.key, prefix, *requester.key)
        name = target.display_name or target.user_id
        if agent_id is None:
            return f"{name} has not talked with the bot here."
        said = await self.engine.db.read(partial(said_in, agent_id=agent_id, prefix=prefix, limit=limit))
        if not said:
            return f"{name} has not talked with the bot in {where}."
        lines = [f"What {name} said to the bot in {where} (newest {len(said)}; DMs are never shown):"]
        lines += [f"[{format_time(m.created_at)}] {m.search_text or ''}" for m in said]
        return "\n".join(lines)

    async def search_memory(self, user: UserRef, query: str, *, archival: bool = False, limit: int = 10) -> list[str]:
        """The top results of the agent's conversation (or archival) search, best first, each with its time:
        the same search its functions use."""
        agent_id = await find_agent(self.engine.db, user)
        if agent_id is None:
            raise CommandError(f"{user.display_name or user.user_id} has no agent yet.")
        async with self.using(agent_id) as agent:
            if archival:
                hits = await agent.archival.search(query, 0, limit, private=True)
                return [hit.describe() for hit in hits.items]
            rows = await agent.recall.search(query, 0, limit, private=True)
            return [describe(row) for row in rows.items]

    async def reminders(self, user: UserRef) -> list[wakeups.Reminder]:
        """The user's agent's pending reminders, soonest first (for /reminders)."""
        agent_id = await find_agent(self.engine.db, user)
        if agent_id is None:
            return []
        return await self.engine.db.read(partial(wakeups.reminders_of, agent_id=agent_id))

    async def reminders_command(self, user: UserRef, arg: str = "") -> str:
        """`/reminders [cancel N]` on any platform: the pending reminders, one a line, or what cancelling did."""
        action, _, number = arg.strip().partition(" ")
        if action == "cancel":
            return await self.cancel_reminder(user, number)
        if action:
            return "Use /reminders to list them, /reminders cancel N to drop one."
        pending = await self.reminders(user)
        if not pending:
            return "No pending reminders."
        return "\n".join(f"{r.id}  {r.when}  {r.note}" for r in pending)

    async def cancel_reminder(self, user: UserRef, reminder_id: int | str) -> str:
        """Cancel one of the user's pending reminders, by the number /reminders shows; what to tell them."""
        try:
            number = int(str(reminder_id).strip().lstrip("#"))
        except ValueError:
            raise CommandError("Name the reminder by its number, as /reminders lists them.") from None
        agent_id = await find_agent(self.engine.db, user)
        if agent_id is not None:
            pending = {r.id: r for r in await self.reminders(user)}
            if number in pending and await self.engine.db.write(
                partial(wakeups.cancel_reminder, agent_id=agent_id, wakeup_id=number)
            ):
                reminder = pending[number]
                return f"Cancelled reminder {number} ({reminder.when}: {reminder.note})."
        return f"You have no pending reminder {number}; /reminders lists them."

    async def heartbeats_command(self, user: UserRef, arg: str = "") -> str:
        """`/heartbeats [on|off]` on any platform: turn timed heartbeats off for the user's agent (the pending one
        is dropped) or back on (MEMBOT_HEARTBEAT_MINUTES from now); alone, whether they run and the next one due."""
        choice = arg.strip().lower()
        if choice not in ("", "on", "off"):
            raise CommandError(f"/heartbeats does not know {arg.strip()[:40]!r}. {heartbeats.USAGE}")
        if choice:
            agent_id: int | None = (await self.agent_id(user))[0]
            await self.engine.db.write(partial(wakeups.set_heartbeats_on, agent_id=agent_id, on=choice == "on"))
        else:
            agent_id = await find_agent(self.engine.db, user)
        minutes = self.settings.heartbeat_minutes
        if minutes is None:
            return heartbeats.not_offered(choice)
        if choice == "on" and agent_id is not None:
            await self.schedule_heartbeat(agent_id)
        state = None if agent_id is None else await self.engine.db.read(
            partial(wakeups.heartbeat_state, agent_id=agent_id)
        )
        return heartbeats.state_text(state, minutes, self.settings.quiet_hours)





async def undelivered(events: AsyncIterator[Event], whom: str) -> None:
    """Run a step nobody can be shown (its memory edits still count), logging what it would have sent."""
    async with aclosing(events) as stream:
        async for event in stream:
            if event.visible:
                log.warning("not delivered to %s: %s", whom, getattr(event, "text", ""))

