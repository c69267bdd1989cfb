"""Starting and stopping the Discord adapter (`membot serve`), and registering its slash commands
(`membot discord sync`). Setup problems Discord reports become one clear sentence saying what to fix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from membot.adapters.discord.client import MembotClient
from membot.adapters.discord.commands import add_commands
from membot.bot.errors import ConfigurationError
from membot.bot.service import BotService
from membot.bot.settings import Settings

log = logging.getLogger(__name__)

PORTAL = "https://discord.com/developers/applications"
BAD_TOKEN = f"Discord refused DISCORD_TOKEN: copy the bot token again from {PORTAL} (your app > Bot > Reset Token)."
NO_INTENT = (
    f"Discord refused the Message Content intent: enable it at {PORTAL} (your app > Bot > Privileged Gateway "
    "Intents > Message Content Intent), then start again."
)
#: How long a stopping client may take to disconnect before its task is cancelled.
CLOSE_SECONDS = 15.0
#: How long the gateway may take to accept a connection at start.
GATEWAY_TIMEOUT = 10.0
#: The gateway's close code for a token it refuses.
AUTHENTICATION_FAILED = 4004


class ShardedMembotClient(MembotClient, discord.AutoShardedClient):
    """The same client over several gateway connections (shards), for bots in many guilds: discord.py's
    AutoShardedClient runs the shards named in `shard_ids`. Discord sends DMs to shard 0 only."""


def make_client(service: BotService, settings: Settings, *, guild_ready_timeout: float = 2.0) -> MembotClient:
    """A plain client, or, with MEMBOT_DISCORD_SHARD_COUNT / MEMBOT_DISCORD_SHARD_IDS set, one that runs just
    those shards (other processes run the others). Raises ConfigurationError for ids that cannot work."""
    shards = settings.discord_shards()
    if shards is None:
        return MembotClient(service, settings, guild_ready_timeout=guild_ready_timeout)
    shard_ids, shard_count = shards
    return ShardedMembotClient(
        service, settings, guild_ready_timeout=guild_ready_timeout, shard_ids=shard_ids, shard_count=shard_count
    )


def _token(settings: Settings) -> str:
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        raise ConfigurationError("Set DISCORD_TOKEN to the bot token of your Discord application.")
    return settings.discord_token.get_secret_value().strip()


@contextmanager
def discord_endpoints(settings: Settings) -> Iterator[None]:
    """Point discord.py at MEMBOT_DISCORD_API_URL / MEMBOT_DISCORD_GATEWAY_URL while a client runs.
    They are class attributes (process-wide), so the old values come back when it stops; two clients
    with different endpoints cannot run at once in one process."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if settings.discord_api_url:
        discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


def _clear(exc: BaseException, client: discord.Client | None = None) -> BaseException:
    """The error to stop with: setup mistakes (ConfigurationError) and an unreachable Discord (ConnectionError,
    which `membot serve` retries) in words, the rest as they are."""
    if type(exc) is ConnectionError:  # said in words already (reach_gateway)
        return exc
    if isinstance(exc, discord.LoginFailure):
        return ConfigurationError(BAD_TOKEN)
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return ConfigurationError(NO_INTENT)
    if isinstance(exc, discord.ConnectionClosed) and exc.code == AUTHENTICATION_FAILED:
        return ConfigurationError(BAD_TOKEN)
    if isinstance(exc, discord.DiscordServerError):
        return ConnectionError(f"Discord is failing ({exc.status} at {discord.http.Route.BASE}): {exc.text or exc}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return ConnectionError(f"Could not reach Discord at {discord.http.Route.BASE}: {exc}")
    if isinstance(exc, AttributeError) and client is not None and client.ws is None:
        # discord.py cannot retry a first gateway connection that failed: its reconnect path reads the
        # websocket it never got. That is an unreachable gateway, and `membot serve` retries it.
        return ConnectionError(f"Could not reach the Discord gateway at {gateway_url()}")
    return exc


def gateway_url() -> yarl.URL:
    return discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


async def reach_gateway(within: float = GATEWAY_TIMEOUT) -> None:
    """Opens (and closes) a TCP connection to the gateway before the client connects, since discord.py does not
    retry a first connection that fails (see `_clear`). Raises ConnectionError, in words."""
    url = gateway_url()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), within)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"Could not reach the Discord gateway at {url}: {str(exc) or 'no answer'}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _start(client: MembotClient, token: str) -> None:
    """Log in (checks the token over HTTP), check the gateway is there, then connect; discord.py reconnects by
    itself from then on."""
    await client.login(token)
    await reach_gateway()
    await client.connect(reconnect=True)


async def run_discord(
    service: BotService, settings: Settings, stop: asyncio.Event, *, guild_ready_timeout: float = 2.0
) -> None:
    """Run the Discord adapter until `stop` is set, then close cleanly. Raises (clearly) if Discord
    refuses to let it run."""
    token = _token(settings)
    shards = settings.discord_shards()  # wrong shard settings stop here, before anything connects
    if shards is not None:
        log.info("Discord: running shard(s) %s of %d", ", ".join(map(str, shards[0])), shards[1])
    with discord_endpoints(settings):
        client = make_client(service, settings, guild_ready_timeout=guild_ready_timeout)
        service.outlets["discord"] = client.deliver_privately  # reminders and heartbeats reach DMs
        running = asyncio.create_task(_start(client, token), name="discord-client")
        stopping = asyncio.create_task(stop.wait(), name="discord-stop")
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            service.outlets.pop("discord", None)
            await client.close()
            if not running.done():
                done, _ = await asyncio.wait({running}, timeout=CLOSE_SECONDS)
                if not done:
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
        exc = None if running.cancelled() else running.exception()
        if exc is not None and not stop.is_set():
            raise _clear(exc, client) from None
        if exc is not None:  # failing while being stopped is not worth more than a note
            log.debug("discord client ended with %r while stopping", exc)


async def sync_commands(settings: Settings, guild_id: int | None = None) -> list[str]:
    """Register the slash commands with Discord: globally, or in one guild (visible at once there; handy
    while developing). Returns the names synced. Done on demand, not at every start: Discord rate-limits
    command registration."""
    token = _token(settings)
    with discord_endpoints(settings):
        client = discord.Client(intents=discord.Intents.none())
        tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
        add_commands(tree)
        try:
            await client.login(token)
            if guild_id is None:
                synced = await tree.sync()
            else:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
        except discord.Forbidden as exc:
            raise ConfigurationError(
                f"Discord refused to register the commands in guild {guild_id} ({exc.text}): invite the bot "
                "there with the applications.commands scope."
            ) from None
        except Exception as exc:
            clear = _clear(exc)
            if clear is exc:
                raise
            raise clear from None
        finally:
            await client.close()
    return sorted(command.name for command in synced)
