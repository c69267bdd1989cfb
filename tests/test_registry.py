"""Tool schemas derived from plain functions: what the registry adds, and what it refuses."""

from __future__ import annotations

import pytest

from membot.agent.tools.registry import HEARTBEAT, THOUGHTS, ToolRegistry, make_tool


async def remember(topic: str, request_heartbeat: bool = False) -> str | None:
    """Remember a topic.

    Args:
        topic: What to remember.
    """
    return topic


async def explains_heartbeat(topic: str, request_heartbeat: bool = False) -> str | None:
    """Remember a topic.

    Args:
        topic: What to remember.
        request_heartbeat: Wake again.
    """
    return topic


async def undocumented(topic: str) -> str | None:
    """Remember a topic."""
    return topic


def test_the_monologue_and_the_heartbeat_carry_no_description_of_their_own() -> None:
    schema = ToolRegistry([remember]).get("remember").schema["function"]
    props = schema["parameters"]["properties"]
    assert list(props) == [THOUGHTS, "topic", HEARTBEAT]
    assert props["topic"]["description"] == "What to remember."
    assert "description" not in props[THOUGHTS] and "description" not in props[HEARTBEAT]
    assert schema["parameters"]["required"] == [THOUGHTS, "topic"]


def test_a_docstring_that_explains_the_heartbeat_or_skips_an_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="request_heartbeat is explained by the system prompt"):
        make_tool(explains_heartbeat)
    with pytest.raises(TypeError, match="argument 'topic' is not described"):
        make_tool(undocumented)
