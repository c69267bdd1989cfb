"""The functions an agent may call: the base set, plus the extras its configuration switches on."""

from __future__ import annotations

from membot.agent.config import EngineConfig, EngineConfigError
from membot.agent.tools.base import BASE_FUNCTIONS
from membot.agent.tools.extras import EXTRA_FUNCTIONS
from membot.agent.tools.knowledge import KNOWLEDGE_FUNCTIONS
from membot.agent.tools.registry import THOUGHTS, ToolRegistry


def build_tools(config: EngineConfig) -> ToolRegistry:
    unknown = sorted(config.extras - set(EXTRA_FUNCTIONS))
    if unknown:
        raise EngineConfigError(f"Unknown MEMBOT_EXTRAS {', '.join(unknown)}; choose from {', '.join(EXTRA_FUNCTIONS)}.")
    if "http_request" in config.extras and not config.http_allow:
        raise EngineConfigError("http_request needs MEMBOT_HTTP_ALLOW: the hosts it may reach.")
    funcs = list(BASE_FUNCTIONS) + KNOWLEDGE_FUNCTIONS + [EXTRA_FUNCTIONS[name] for name in sorted(config.extras)]
    return ToolRegistry(funcs, THOUGHTS if config.inner_thoughts == "arguments" else None)
