"""The one settings object: environment variables (and `.env`), named as DESIGN.md's contract names them.

Built once at start-up by the CLI and passed down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from membot.agent.config import EngineConfig, known_context_window
from membot.bot.errors import ConfigurationError
from membot.bot.unsolicited import QuietHours


def _ids(value: object) -> object:
    """Admin id lists come as "1,2 3" in the environment."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True)

    # The model endpoint. None means OpenAI itself (https://api.openai.com/v1, as the SDK's default).
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    # Sent as the OpenAI-Organization and OpenAI-Project headers when set, as the SDK did.
    openai_org_id: str | None = Field(default=None, validation_alias="OPENAI_ORG_ID")
    openai_project_id: str | None = Field(default=None, validation_alias="OPENAI_PROJECT_ID")
    model: str = Field(default="gpt-4o-mini", validation_alias="MEMBOT_MODEL")
    context_window: int | None = Field(default=None, validation_alias="MEMBOT_CONTEXT_WINDOW")
    embedding_model: str = Field(default="text-embedding-3-small", validation_alias="MEMBOT_EMBEDDING_MODEL")
    embedding_dim: int = Field(default=1536, validation_alias="MEMBOT_EMBEDDING_DIM")
    embedding_base_url: str | None = Field(default=None, validation_alias="MEMBOT_EMBEDDING_BASE_URL")
    embedding_batch_size: int = Field(default=128, validation_alias="MEMBOT_EMBEDDING_BATCH_SIZE")
    # An Azure OpenAI resource instead of OPENAI_BASE_URL; MEMBOT_MODEL and MEMBOT_EMBEDDING_MODEL name deployments.
    azure_openai_endpoint: str | None = Field(default=None, validation_alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_api_key: SecretStr | None = Field(default=None, validation_alias="AZURE_OPENAI_API_KEY")
    openai_api_version: str = Field(default="2024-10-21", validation_alias="OPENAI_API_VERSION")
    model_timeout: float = Field(default=60.0, validation_alias="MEMBOT_MODEL_TIMEOUT")
    model_max_retries: int = Field(default=2, validation_alias="MEMBOT_MODEL_MAX_RETRIES")

    # Storage.
    home: Path = Field(default=Path("~/.membot"), validation_alias="MEMBOT_HOME")
    database_url: str | None = Field(default=None, validation_alias="MEMBOT_DATABASE_URL")
    milvus_uri: str | None = Field(default=None, validation_alias="MEMBOT_MILVUS_URI")
    milvus_token: SecretStr | None = Field(default=None, validation_alias="MEMBOT_MILVUS_TOKEN")

    # Agent behaviour.
    core_memory_limit: int = Field(default=2000, validation_alias="MEMBOT_CORE_MEMORY_LIMIT")
    max_chain: int = Field(default=10, validation_alias="MEMBOT_MAX_CHAIN")
    pressure_threshold: float = Field(default=0.75, validation_alias="MEMBOT_PRESSURE_THRESHOLD")
    default_persona: str = Field(default="sam_pov", validation_alias="MEMBOT_PERSONA")
    default_human: str = Field(default="basic", validation_alias="MEMBOT_HUMAN")
    agent_cache_size: int = Field(default=256, validation_alias="MEMBOT_AGENT_CACHE_SIZE")
    max_upload_mb: float = Field(default=50.0, validation_alias="MEMBOT_MAX_UPLOAD_MB")

    # Extra functions, off unless named (comma-separated), and the hosts http_request may reach.
    extras: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MEMBOT_EXTRAS")
    http_allow: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MEMBOT_HTTP_ALLOW")
    sandbox_max_mb: float = Field(default=10.0, validation_alias="MEMBOT_SANDBOX_MAX_MB")
    sandbox_max_files: int = Field(default=200, validation_alias="MEMBOT_SANDBOX_MAX_FILES")
    inner_thoughts: Literal["arguments", "content"] = Field(default="arguments", validation_alias="MEMBOT_INNER_THOUGHTS")
    tool_mode: Literal["auto", "tools", "json"] = Field(default="auto", validation_alias="MEMBOT_TOOL_MODE")
    # Replies shown as the model writes them (edited in place on Discord and Slack); false: whole, when done.
    stream: bool = Field(default=True, validation_alias="MEMBOT_STREAM")
    # Per-user quotas, counted in the database (all processes together); unset means none.
    user_messages_per_minute: int | None = Field(default=None, ge=1, validation_alias="MEMBOT_USER_MESSAGES_PER_MINUTE")
    user_tokens_per_day: int | None = Field(default=None, ge=1, validation_alias="MEMBOT_USER_TOKENS_PER_DAY")
    # Timed heartbeats: each agent that has talked is woken this many minutes after its last activity; unset: off.
    heartbeat_minutes: int | None = Field(default=None, ge=1, validation_alias="MEMBOT_HEARTBEAT_MINUTES")
    # Limits on what heartbeats and reflections send unasked (bot/unsolicited.py): hours in the user's time zone
    # when none start ("22-08"; unset: none), and how many of their messages reach a user a day.
    quiet_hours: QuietHours | None = Field(default=None, validation_alias="MEMBOT_QUIET_HOURS")
    unsolicited_per_day: int = Field(default=3, ge=0, validation_alias="MEMBOT_UNSOLICITED_PER_DAY")
    # Memory tidied at rest: a conversation quiet this many minutes gets one reflection event; unset: off.
    reflect_after_minutes: int | None = Field(default=None, ge=1, validation_alias="MEMBOT_REFLECT_AFTER_MINUTES")

    # Who may talk to the bot, by platform ids (comma-separated; empty restricts nothing; see bot/access.py),
    # and the channels where it answers every message without a mention.
    allow_users: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MEMBOT_ALLOW_USERS")
    allow_roles: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MEMBOT_ALLOW_ROLES")
    allow_guilds: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MEMBOT_ALLOW_GUILDS")
    allow_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MEMBOT_ALLOW_CHANNELS"
    )
    open_channels: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MEMBOT_OPEN_CHANNELS")

    # Discord.
    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")
    discord_monologue_channel_id: int | None = Field(default=None, validation_alias="DISCORD_MONOLOGUE_CHANNEL_ID")
    # A mention in a server channel opens a thread for the conversation (else the bot answers in the channel).
    discord_threads: bool = Field(default=False, validation_alias="MEMBOT_DISCORD_THREADS")
    discord_admin_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="DISCORD_ADMIN_IDS"
    )
    # Operators by role too: holders of these role ids in the one guild named (a role id cannot be copied by
    # another server, as a role's name could).
    discord_operator_guild_id: int | None = Field(default=None, validation_alias="DISCORD_OPERATOR_GUILD_ID")
    discord_operator_role_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="DISCORD_OPERATOR_ROLE_IDS"
    )
    # A guild's Administrators may see what a member said in that guild (never DMs, never core memory).
    guild_admins_see_guild: bool = Field(default=False, validation_alias="MEMBOT_GUILD_ADMINS_SEE_GUILD")
    discord_api_url: str | None = Field(default=None, validation_alias="MEMBOT_DISCORD_API_URL")
    discord_gateway_url: str | None = Field(default=None, validation_alias="MEMBOT_DISCORD_GATEWAY_URL")
    # Sharding, for bots in many guilds: the shards in all, and those this process runs (comma-separated; with
    # only a count, all of them). Neither set: one unsharded connection. See `discord_shards`.
    discord_shard_count: int | None = Field(default=None, validation_alias="MEMBOT_DISCORD_SHARD_COUNT")
    discord_shard_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, validation_alias="MEMBOT_DISCORD_SHARD_IDS"
    )

    # Slack.
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_monologue_channel: str | None = Field(default=None, validation_alias="SLACK_MONOLOGUE_CHANNEL")
    slack_admin_ids: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="SLACK_ADMIN_IDS")
    slack_api_url: str | None = Field(default=None, validation_alias="MEMBOT_SLACK_API_URL")
    slack_port: int = Field(
        default=3000, validation_alias=AliasChoices("MEMBOT_SLACK_PORT", "SLACK_PORT")
    )

    _split_ids = field_validator(
        "discord_admin_ids", "discord_operator_role_ids", "slack_admin_ids", "extras", "http_allow", "allow_users", "allow_roles",
        "allow_guilds", "allow_channels", "open_channels", "discord_shard_ids", mode="before",
    )(_ids)

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _quiet_hours(cls, value: object) -> object:
        """"22-08" read at start: a mistake stops it with a line naming MEMBOT_QUIET_HOURS (bot/cli.py)."""
        return QuietHours.parse(value) if isinstance(value, str) else value

    def discord_shards(self) -> tuple[list[int], int] | None:
        """The shard ids this process runs and the shard count, or None to run unsharded. Checked here, not
        at parsing, so that the mistake reads as a ConfigurationError naming the variable to fix."""
        count, ids = self.discord_shard_count, self.discord_shard_ids
        if count is None and not ids:
            return None
        if count is None:
            raise ConfigurationError(
                "MEMBOT_DISCORD_SHARD_IDS needs MEMBOT_DISCORD_SHARD_COUNT: set it to the number of shards in all."
            )
        if count < 1:
            raise ConfigurationError(f"MEMBOT_DISCORD_SHARD_COUNT must be 1 or more, not {count}.")
        if not ids:
            return list(range(count)), count
        wrong = sorted({i for i in ids if not 0 <= i < count})
        if wrong:
            raise ConfigurationError(
                f"MEMBOT_DISCORD_SHARD_IDS must be shard ids from 0 to {count - 1} (MEMBOT_DISCORD_SHARD_COUNT is "
                f"{count}), not {', '.join(map(str, wrong))}."
            )
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ConfigurationError(
                f"MEMBOT_DISCORD_SHARD_IDS names shard {', '.join(map(str, twice))} more than once."
            )
        return list(ids), count

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.home_dir / 'membot.db'}"

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.home_dir / "milvus.db")

    def engine_config(self) -> EngineConfig:
        """What the engine needs of these settings; the engine never sees platform tokens."""
        return EngineConfig(
            api_key=self.openai_api_key.get_secret_value() if self.openai_api_key else None,
            base_url=self.openai_base_url,
            organization=self.openai_org_id,
            project=self.openai_project_id,
            model=self.model,
            context_window=self.context_window or known_context_window(self.model),
            embedding_model=self.embedding_model,
            embedding_dim=self.embedding_dim,
            embedding_base_url=self.embedding_base_url,
            embedding_batch_size=self.embedding_batch_size,
            azure_endpoint=self.azure_openai_endpoint,
            azure_api_key=self.azure_openai_api_key.get_secret_value() if self.azure_openai_api_key else None,
            api_version=self.openai_api_version,
            model_timeout=self.model_timeout,
            model_max_retries=self.model_max_retries,
            database_url=self.resolved_database_url,
            milvus_uri=self.resolved_milvus_uri,
            milvus_token=self.milvus_token.get_secret_value() if self.milvus_token else None,
            home=self.home_dir,
            core_memory_limit=self.core_memory_limit,
            max_chain=self.max_chain,
            pressure_threshold=self.pressure_threshold,
            max_file_bytes=int(self.max_upload_mb * 1024 * 1024),
            extras=frozenset(self.extras),
            http_allow=frozenset(h.lower() for h in self.http_allow),
            sandbox_max_bytes=int(self.sandbox_max_mb * 1024 * 1024),
            sandbox_max_files=self.sandbox_max_files,
            inner_thoughts=self.inner_thoughts,
            tool_mode=self.tool_mode,
            stream=self.stream,
        )
