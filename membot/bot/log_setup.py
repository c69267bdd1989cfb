"""How membot logs: one readable format for every command, membot's own news at INFO while it serves, and the
libraries' noise kept out (warnings that concern no feature membot uses, tracebacks for a retry they already say).
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

#: (logger name prefix, words of the message) of warnings that say nothing to an operator of membot.
SILENCED: tuple[tuple[str, str], ...] = (
    ("discord.client", "PyNaCl is not installed"),  # voice: membot has none
    ("discord.client", "davey is not installed"),  # voice encryption, likewise
    # Bolt reads SLACK_BOT_TOKEN from the environment even though membot hands it a client built with it.
    ("slack_bolt", "As you gave `client` as well, `token` will be unused"),
)

#: (logger name prefix, words of the message) of retries the library logs with a full traceback each time:
#: one line with the error is enough, as the retry goes on by itself.
ONE_LINE: tuple[tuple[str, str], ...] = (
    ("discord.client", "Attempting a reconnect"),
    ("slack_sdk.socket_mode", "Failed to connect"),
    ("slack_bolt", "Failed to connect"),
)


def _matches(record: logging.LogRecord, rules: tuple[tuple[str, str], ...]) -> bool:
    return any(record.name.startswith(prefix) and words in str(record.msg) for prefix, words in rules)


class LibraryNoise(logging.Filter):
    """Drops SILENCED warnings and cuts ONE_LINE records to one line, keeping the error's own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _matches(record, SILENCED):
            return False
        if record.exc_info and _matches(record, ONE_LINE):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


def configure_logging(command: str, verbose: bool) -> None:
    """A running bot says what it does at INFO (its own loggers only: libraries stay at WARNING); the terminal
    chat and the one-shot commands keep stderr for what the user asked. -v: DEBUG, everything."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr, format=FORMAT,
                        datefmt=DATE_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(LibraryNoise())
    if command == "serve" and not verbose:
        logging.getLogger("membot").setLevel(logging.INFO)
