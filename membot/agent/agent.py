"""One agent: its state, and the step loop that turns one incoming event into a chain of model calls.

A step: the event is stored (committed on its own, so the user's words are never lost); then up to
`max_chain` model calls, each followed by every function it called and one commit of everything it changed
(the assistant message, the function result, core memory edits, agent state), awaited before the step goes
on. A heartbeat request, a failed function or a memory-pressure alert continues the chain; `send_message`
without a heartbeat ends it. The caller holds the agent's lease for the step (see store/leases.py); every
commit checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from membot.agent import messages as msg
from membot.agent import prompts
from membot.agent.context.tokens import TokenCalibration
from membot.agent.context.window import (
    ContextQueue,
    MemoryStats,
    PromptBudget,
)
from membot.agent.drafts import Drafts
from membot.agent.events import (
    AssistantMessage,
    DraftDropped,
    ErrorMessage,
    Event,
    FunctionCall,
    FunctionResult,
    ReplyDraft,
    SystemNote,
    Thought,
)
from membot.agent.llm.client import (
    ChatResult,
    ContextOverflow,
    ModelUnavailable,
    OnChunk,
    ToolsUnsupported,
)
from membot.agent.llm.reply import EMPTY
from membot.agent.llm.stream import StreamedReply
from membot.agent.memory.archival import ArchivalMemory
from membot.agent.memory.core import CoreMemory
from membot.agent.memory.entities import Entity, TopEntities
from membot.agent.memory.recall import RecallMemory, RecallState
from membot.agent.notices import (
    CANCELLED,
    GAVE_UP,
    NO_CALL_HINT,
    NO_REPLY,
    PLAIN_ANSWERS,
    PRESSURE_ALERT,
    trouble,
)
from membot.agent.place import PRIVATE, Place
from membot.agent.sources.catalog import Attached
from membot.agent.step_write import StepWrite
from membot.agent.store import facts, wakeups
from membot.agent.store.leases import check
from membot.agent.store.schema import AgentRow, BlockRow, utcnow
from membot.agent.tools.context import ToolContext
from membot.agent.tools.json_mode import chat_in_json
from membot.agent.tools.run import run_tool
from membot.agent.window_upkeep import WindowUpkeep

if TYPE_CHECKING:
    from membot.agent.engine import Engine

log = logging.getLogger(__name__)

# How many keys `_absent_entities` keeps before it starts again.
_ABSENT_KEYS = 5000


class Agent(WindowUpkeep):
    def __init__(self, engine: Engine, row: AgentRow, core: CoreMemory) -> None:
        self.engine = engine
        self.row = row
        self.id = row.id
        self.core = core
        self.recall = RecallMemory(engine.db, row.id, engine.terms)
        self.archival = ArchivalMemory(engine.db, engine.passages, engine.embedder, row.id, row.archival_passages)
        self.calibration = TokenCalibration(row.token_ratio)
        self.budget = PromptBudget(engine.config.context_window, engine.counter, engine.tool_tokens)
        self.context = ContextQueue(self.budget)
        #: Messages in recall memory: counted when the agent loads (`restore`), then kept up to date by this
        #: agent's own commits.
        self._recall_count = 0
        #: Attached source names, with the catalog's change count they were read at (-1: never read).
        self._sources: tuple[int, list[Attached]] = (-1, [])
        #: The most talked-about entities (None: not read since the agent loaded; see `_top_entities`).
        self._entities: TopEntities | None = None
        #: Keys no entity of this agent has, as its own commits found (only its steps add entities, and an agent
        #: another process changed is loaded afresh): spares the entity reads of sentence-initial words.
        self._absent_entities: set[str] = set()
        #: Set by each model call's handling: whether the chain goes on, whether the next call must call a
        #: function, how many plain-text answers this step had, and whether it gave up on them.
        self._continue = False
        self._force_call = False
        self._plain_answers = 0
        self._gave_up = False
        #: What a model call has to say in the monologue (a switch to JSON mode), said after it.
        self._notes: list[str] = []
        #: The model calls of this agent so far (for draft keys), the last call's result and drafts, and which
        #: of its sent replies a draft showed (position in the outbox -> draft key).
        self._model_calls = 0
        self._result: ChatResult = EMPTY
        self._drafts = Drafts(row.id, "0")
        self._sent_drafts: dict[int, str] = {}
        #: Model tokens spent since the last commit (committed with it), and whether /cancel asked the step to
        #: stop (read back by each commit).
        self._spent = 0
        self._cancelled = False
        #: Where the current step happens (agent/place.py): what it is shown, and what its messages record.
        self.place = PRIVATE

    def restore(self, recall: RecallState, sources: tuple[int, list[Attached]]) -> None:
        """Set what the agent keeps of itself between steps, as read when it loads (see Engine.load_agent):
        its context window, how many messages it has, its attached sources (with the catalog's change count
        they were read at)."""
        self.context = ContextQueue(self.budget, recall.context)
        self._recall_count = recall.count
        self._sources = sources

    # ----- incoming events -------------------------------------------------------------------------------

    def user_message(self, text: str, sender: str | None = None, place: Place = PRIVATE) -> AsyncIterator[Event]:
        """A user's message, said in `place`: a step in a shared channel sees nothing private."""
        return self._step(msg.user_message(self.id, text, sender=sender, where=place.label), place=place)

    def login(self) -> AsyncIterator[Event]:
        last = self.row.last_login_at
        if last is None:
            text = "The user logged in for the first time. Greet them and introduce yourself in your persona."
        else:
            text = f"The user logged in again. Their last login was {msg.format_time(last)}."
        return self._step(msg.event_message(self.id, "login", text), login=True)

    def system_event(self, text: str, kind: str = "system_alert") -> AsyncIterator[Event]:
        return self._step(msg.event_message(self.id, kind, text))

    def heartbeat(self, reason: str = "Timed heartbeat") -> AsyncIterator[Event]:
        return self._step(msg.event_message(self.id, "heartbeat", reason))

    # ----- the step loop ---------------------------------------------------------------------------------

    async def _step(self, incoming: msg.Message, login: bool = False, place: Place = PRIVATE) -> AsyncIterator[Event]:
        self.place = place
        await self._store(StepWrite(self.id, self.engine.leases.holder, self._here([incoming]),
                                    state={"last_login_at": incoming.created_at} if login else {},
                                    absent=self._absent_entities))
        if login:
            self.row.last_login_at = incoming.created_at
        self.context.append(incoming)
        self._recall_count += 1
        async with aclosing(self._chain()) as events:
            async for event in events:
                yield event

    async def _chain(self) -> AsyncIterator[Event]:
        """The model calls of one step, each followed by its functions, until one does not ask to go on."""
        stats = await self._stats()
        summarised = False
        config = self.engine.config
        self._force_call, self._plain_answers, self._spent, self._cancelled = False, 0, 0, False
        for _ in range(config.max_chain):
            prompt, size, fitted = await self._fit(stats, summarised)
            if fitted:
                summarised = True
                yield SystemNote(self.id, fitted)
            try:
                async for event in self._call_model(prompt, size):
                    yield event
                result = self._result
            except ContextOverflow:
                if summarised:
                    yield ErrorMessage(self.id, "Sorry, my memory is too full to answer that right now.")
                    return
                note = await self._evict(self.budget.limit // 3, stats)
                summarised = True
                yield SystemNote(self.id, f"The server said the prompt was too long; {note}")
                try:
                    async for event in self._call_model(*self._prompt(stats)):
                        yield event
                    result = self._result
                except (ContextOverflow, ModelUnavailable) as exc:
                    yield ErrorMessage(self.id, trouble(exc))
                    return
            except ModelUnavailable as exc:
                yield SystemNote(self.id, f"Model call failed: {exc}")
                yield ErrorMessage(self.id, trouble(exc))
                return
            for note in self._notes:
                yield SystemNote(self.id, note)
            self._notes.clear()
            async for event in self._act(result, stats):
                yield event
            if self._continue and self._cancelled:
                yield SystemNote(self.id, CANCELLED)
                return
            if not self._continue:
                return
        yield SystemNote(self.id, f"Chain cut after {config.max_chain} model calls (the bound); what was sent stands.")

    async def _call_model(self, prompt: list[dict[str, Any]], estimate: int) -> AsyncIterator[Event]:
        """One model call: yields the drafts of the replies it writes as they stream in (agent/drafts.py), then
        leaves the result in `self._result` (and its drafts in `self._drafts`). Raises what the call raised."""
        self._model_calls += 1
        self._drafts = drafts = Drafts(self.id, str(self._model_calls))
        if not self.engine.config.stream:
            self._result = await self._ask_model(prompt, estimate, None)
            return
        shown: asyncio.Queue[ReplyDraft | None] = asyncio.Queue()

        def grew(reply: StreamedReply) -> None:
            for draft in drafts.update(reply):
                shown.put_nowait(draft)

        call = asyncio.create_task(self._ask_model(prompt, estimate, grew))
        call.add_done_callback(lambda _: shown.put_nowait(None))
        try:
            while (draft := await shown.get()) is not None:
                yield draft
        finally:
            if not call.done():  # the listener stopped early: the call goes with it
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
        self._result = call.result()

    async def _ask_model(self, prompt: list[dict[str, Any]], estimate: int, grew: OnChunk | None) -> ChatResult:
        engine = self.engine
        choice = "required" if self._force_call else "auto"
        if not engine.json_mode:
            try:
                result = await engine.model.chat(prompt, engine.tools.schemas(), tool_choice=choice, on_chunk=grew)
            except ToolsUnsupported as exc:
                if engine.config.tool_mode != "auto":
                    raise
                # Permanent for this model: every agent of this process offers functions as JSON from now on.
                log.warning("%s Functions are offered as a JSON object from now on (MEMBOT_TOOL_MODE=json).", exc)
                self._notes.append(f"{exc} Switched to JSON mode: the functions are listed in the prompt.")
                engine.json_mode = True
        if engine.json_mode:
            result = await chat_in_json(engine.model, prompt, engine.tools.schemas())
        if result.prompt_tokens:
            self.calibration.observe(estimate, result.prompt_tokens)
        self.row.last_prompt_tokens = result.prompt_tokens or self.calibration.correct(estimate)
        # What the call cost, for the user's daily quota: the server's count, else our estimate.
        written = result.completion_tokens
        if written is None:
            said = (result.content or "") + "".join(call.arguments for call in result.tool_calls)
            written = engine.counter.text(said + (result.reasoning or ""))
        self._spent += self.row.last_prompt_tokens + written
        return result

    async def _act(self, result: ChatResult, stats: MemoryStats) -> AsyncIterator[Event]:
        """Run what the model asked for and commit it; sets self._continue."""
        self._continue, self._sent_drafts = False, {}
        forced, self._force_call = self._force_call, False
        if result.reasoning:  # a reasoning model's: monologue, never shown, never sent back
            yield Thought(self.id, result.reasoning)
        ctx = ToolContext(self.id, self.core, self.recall, self.archival, self.engine.config,
                          heartbeats_paused_until=self.row.heartbeats_paused_until, model=self.engine.model,
                          place=self.place, holder=self.engine.leases.holder,
                          announce_wakeup=self.engine.wakeups.announce)
        rows: list[msg.Message] = []
        if result.tool_calls:
            async for event in self._calls(result, ctx, rows):
                yield event
        else:
            for event in self._plain_answer(result.content, forced, ctx, rows):
                yield event
        alert = self._pressure_alert()
        if alert:
            rows.append(msg.event_message(self.id, "system_alert", alert))
            yield SystemNote(self.id, alert)
            self._continue = True
        await self._commit(rows, ctx)
        stats.recall_messages += len(rows)
        self._recall_count = stats.recall_messages
        # Shown once stored: a reply the user saw is always in recall memory.
        for position, text in enumerate(ctx.outbox):
            yield AssistantMessage(self.id, text, draft=self._sent_drafts.get(position))
        if self._gave_up:
            self._gave_up = False
            yield ErrorMessage(self.id, NO_REPLY)

    async def _calls(self, result: ChatResult, ctx: ToolContext, rows: list[msg.Message]) -> AsyncIterator[Event]:
        """Every call of the reply, in order, each answered with its own result (the API refuses a next request
        that leaves one unanswered); their events as they happen, the rows to store added to `rows`."""
        if result.content:
            yield Thought(self.id, result.content)
        calls, results, thoughts = [], [], [result.content] if result.content else []
        failed = heartbeat = False
        for position, call in enumerate(result.tool_calls):
            call_id = call.id or f"call_{uuid.uuid4().hex[:12]}"
            tool = self.engine.tools.get(call.name)
            thought, shown = tool.split_thought(call.arguments) if tool else (None, call.arguments)
            if thought:
                thoughts.append(thought)
                yield Thought(self.id, thought)
            yield FunctionCall(self.id, call.name, shown)
            sent = len(ctx.outbox)
            ok, output, asked = await run_tool(self.engine.tools, ctx, call)
            draft = self._drafts.key(position)
            if draft in self._drafts.shown:
                if len(ctx.outbox) > sent:
                    self._sent_drafts[sent] = draft
                else:  # shown as it was written, then refused: it goes
                    yield DraftDropped(self.id, draft)
            yield FunctionResult(self.id, call.name, ok, output or "None")
            calls.append({"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}})
            results.append(msg.tool_result(self.id, call_id, call.name, ok, output))
            failed, heartbeat = failed or not ok, heartbeat or asked
        said = "\n".join(ctx.outbox) or None
        rows.append(msg.assistant_message(self.id, result.content, calls, said, "\n".join(thoughts) or None))
        rows.extend(results)
        if failed:
            rows.append(msg.event_message(self.id, "heartbeat", "Function call failed; you may try again."))
        elif heartbeat:
            rows.append(msg.event_message(self.id, "heartbeat", "Function called with request_heartbeat=true."))
        self._continue = failed or heartbeat

    def _plain_answer(self, text: str | None, forced: bool, ctx: ToolContext, rows: list[msg.Message]) -> list[Event]:
        """A reply without a call. The next call is forced (tool_choice "required"); if the model still answers
        in text and it thinks in the arguments, the text is its reply. A text-only model costs at most
        PLAIN_ANSWERS model calls a message."""
        self._plain_answers += 1
        rows.append(msg.assistant_message(self.id, text, None))
        if text and forced and self.engine.config.inner_thoughts == "arguments":
            ctx.outbox.append(text)
            return [SystemNote(self.id, "The model answered in plain text even when told to call a function; "
                                        "its text was sent as the reply.")]
        events: list[Event] = [Thought(self.id, text)] if text else []
        if self._plain_answers >= PLAIN_ANSWERS:
            self._gave_up = True
            events.append(SystemNote(self.id, GAVE_UP.format(n=self._plain_answers)))
            return events
        rows.append(msg.event_message(self.id, "system_alert", NO_CALL_HINT))
        events.append(SystemNote(self.id, "The model replied without a function call; it was told to use one."))
        self._continue = self._force_call = True
        return events

    def _pressure_alert(self) -> str | None:
        window = self.engine.config.context_window
        used = self.row.last_prompt_tokens
        if self.row.pressure_alerted or used < self.engine.config.pressure_threshold * window:
            return None
        self.row.pressure_alerted = True
        return PRESSURE_ALERT.format(pct=min(100, round(100 * used / window)))

    async def _commit(self, rows: list[msg.Message], ctx: ToolContext) -> None:
        self.row.heartbeats_paused_until = ctx.heartbeats_paused_until
        self.row.token_ratio = self.calibration.ratio
        blocks = {label: block.value for label, block in self.core.blocks.items()} if ctx.core_changed else {}
        state = {
            "heartbeats_paused_until": self.row.heartbeats_paused_until,
            "last_prompt_tokens": self.row.last_prompt_tokens,
            "token_ratio": self.row.token_ratio,
            "pressure_alerted": self.row.pressure_alerted,
            "archival_passages": self.archival.own_count,
        }
        spent, self._spent = self._spent, 0
        # The chain's last commit gives the lease back with it: a round trip less for every message.
        self._cancelled = await self._store(StepWrite(self.id, self.engine.leases.holder, self._here(rows), blocks,
                                                      state, tokens=spent, release=not self._continue,
                                                      absent=self._absent_entities))
        self.context.extend(rows)

    def _here(self, rows: list[msg.Message]) -> list[msg.Message]:
        """The step's messages, each marked with where the step happens."""
        for row in rows:
            row.private, row.place = self.place.private, self.place.key
        return rows

    async def _store(self, write: StepWrite) -> bool:
        """Commit one StepWrite; whether the step was asked to stop. If it fails, what this object holds is ahead
        of the database: the error goes up and the caller loads the agent afresh."""
        stored = await self.engine.db.write(write)
        if write.release:
            self.engine.leases.given_back(self.id)
        self.row.version += 1
        if len(self._absent_entities) > _ABSENT_KEYS:
            self._absent_entities.clear()
        self._absent_entities |= stored.absent
        self._absent_entities -= {entity.key for entity in stored.entities}
        if self._entities is not None:
            self._entities.update(stored.entities, utcnow())
        return stored.cancelled

    # ----- settings ----------------------------------------------------------------------------------------

    async def set_persona(self, persona: str) -> None:
        """Swap the persona block for a shipped persona's text (raises UnknownPrompt)."""
        text = prompts.load("personas", persona)
        block = self.core.block("persona")

        def store(session: Session) -> None:
            check(session, self.id, self.engine.leases.holder)
            session.execute(
                update(BlockRow)
                .where(BlockRow.agent_id == self.id, BlockRow.label == "persona")
                .values(value=text[: block.limit])
            )
            session.execute(
                update(AgentRow)
                .where(AgentRow.id == self.id)
                .values(persona_name=persona, version=AgentRow.version + 1)
            )

        await self.engine.db.write(store)
        self.row.version += 1
        block.value = text[: block.limit]
        self.row.persona_name = persona

    async def report(self) -> MemoryReport:
        """Everything `/memory` shows: blocks, counts, sources, the most talked-about entities, and how full the
        context window is."""
        stats = await self._stats(everything=True)
        return MemoryReport(
            agent_id=self.id,
            name=self.row.name,
            persona_name=self.row.persona_name,
            blocks={label: (b.value, b.limit) for label, b in self.core.blocks.items()},
            recall_messages=stats.recall_messages,
            archival_passages=stats.archival_passages,
            sources=list(stats.sources),
            context_messages=len(self.context),
            context_tokens=self.prompt_tokens(stats),
            context_window=self.engine.config.context_window,
            summary=self.row.summary,
            summary_hidden=self.row.summary_hidden,
            entities=tuple((await self._top_entities()).seen(private=True)),
            **await self.engine.db.read(self._fact_summary),
        )

    def _fact_summary(self, session: Session) -> dict[str, Any]:
        """The facts that hold now, newest first, dated in the user's zone, and how many hold in all."""
        holding, count = facts.recent(session, self.id, private=True)
        tz = wakeups.user_zone(session, self.id)
        return {"facts": tuple(fact.describe(tz) for fact in holding), "fact_count": count}


@dataclass(frozen=True)
class MemoryReport:
    agent_id: int
    name: str
    persona_name: str
    blocks: dict[str, tuple[str, int]]
    recall_messages: int
    archival_passages: int
    sources: list[str]
    context_messages: int
    context_tokens: int
    context_window: int
    summary: str
    summary_hidden: int
    #: The most talked-about entities, best first (memory/entities.py).
    entities: tuple[Entity, ...] = ()
    #: The newest facts that hold now, as lines (store/facts.py), and how many hold in all.
    facts: tuple[str, ...] = ()
    fact_count: int = 0
