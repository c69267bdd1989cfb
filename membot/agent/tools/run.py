"""Running one function the model called: every failure becomes a message to the model, never an exception."""

from __future__ import annotations

import logging

from membot.agent.llm.client import ContextOverflow, ModelUnavailable, ToolCallOut
from membot.agent.memory.core import CoreMemoryError
from membot.agent.store.leases import LeaseLost
from membot.agent.store.passages import PassageStoreError
from membot.agent.tools.context import ToolContext
from membot.agent.tools.registry import HEARTBEAT, ToolArgumentsError, ToolRegistry

log = logging.getLogger(__name__)


async def run_tool(tools: ToolRegistry, ctx: ToolContext, call: ToolCallOut) -> tuple[bool, str | None, bool]:
    """(ok, output for the model, heartbeat requested)."""
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(tools.names())
        return False, f"There is no function named {call.name[:100]!r}. Functions: {known}.", False
    try:
        args = tool.parse_arguments(call.arguments)
    except ToolArgumentsError as exc:
        return False, str(exc), False
    heartbeat = bool(args.get(HEARTBEAT, False))
    try:
        output = await tool.func(ctx, **args) if tool.takes_context else await tool.func(**args)
    except (CoreMemoryError, ValueError, PassageStoreError, ModelUnavailable, ContextOverflow) as exc:
        return False, f"{call.name} failed: {exc}", heartbeat
    except LeaseLost:  # another process runs the agent now: the step must stop, not tell the model
        raise
    except Exception as exc:  # a function must never take the agent down with it
        log.exception("function %s raised", call.name)
        return False, f"{call.name} failed with {type(exc).__name__}: {str(exc)[:500]}", heartbeat
    return True, output, heartbeat
