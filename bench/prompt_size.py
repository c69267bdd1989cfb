"""Prompt size: what every call carries before the conversation has said anything: the system prompt, core
memory (default persona and human) and the tool schemas.

Taken from the first request the scripted server receives for a new user's first message, so it is exactly
what goes over the wire. Tool schemas are counted as the model reads them (rendered as OpenAI does, see
`render_tools`), not as the JSON that carries them. Counted with the product's own TokenCounter (the one that decides when to summarise;
it over-counts on purpose when tiktoken's files are not cached, as here) and with the fake server's own
estimate (about 4 characters of JSON per token, the whole request) as a second opinion.
"""

from __future__ import annotations

from bench import Row, Target, drain, log, open_service, scripted_model, user
from membot.agent.context.tokens import TokenCounter, render_tools
from membot.agent.memory.entities import PROMPT_TOKENS
from tests.fakes.openai_server import estimate_prompt_tokens

NAME = "prompt size"
# tiktoken's cl100k runs ~3.9 characters per token on English prose (DESIGN.md, measured on these machines).
CHARS_PER_CL100K_TOKEN = 3.9


async def run(quick: bool) -> list[Row]:
    del quick  # one request is all there is to measure
    async with scripted_model("ok") as model, open_service(model) as service:
        await drain(service.chat(user("newcomer"), "Hi"))
        first = model.requests[0]
        counter = TokenCounter.for_model(service.settings.model)
    system = [m for m in first["messages"] if m["role"] == "system"]
    tools = first.get("tools") or []
    fixed = counter.messages(system) + counter.tools(tools)
    # The server estimates the whole request; the one-word user message is a rounding error in it.
    server = estimate_prompt_tokens({"messages": system, "tools": tools})
    chars = sum(len(m["content"]) for m in system) + len(render_tools(tools))
    counting = "exact (tiktoken)" if counter.exact else "estimate, 3.2 chars/token"
    log(f"system prompt + core memory {counter.messages(system)} tokens, tools {counter.tools(tools)} ({counting})")
    return [
        Row(NAME, "system + core memory + tool schemas (TokenCounter)", float(fixed), "tokens", float(server),
            "fake server's estimate, same request", note=counting),
        # A new user has no entities; an older one's list is capped, and the budget must hold it too.
        Row(NAME, "the same with the entity section at its cap", float(fixed + PROMPT_TOKENS), "tokens",
            target=Target("<=", 1800, label="1,800 tokens"), note=f"{PROMPT_TOKENS} tokens for the entities"),
        Row(NAME, "of which the system message (prompt + core memory)", float(counter.messages(system)), "tokens"),
        Row(NAME, "of which the tool schemas", float(counter.tools(tools)), "tokens", note=f"{len(tools)} functions"),
        Row(NAME, "at ~3.9 characters per cl100k token", chars / CHARS_PER_CL100K_TOKEN, "tokens",
            note=f"{chars:,} characters"),
    ]
