"""`membot load directory` and `membot sources`: data sources from the shell, with a progress bar."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tqdm import tqdm

from membot.agent.sources.catalog import SourceError
from membot.agent.sources.documents import SUPPORTED_EXTENSIONS, collect_paths
from membot.agent.store.passages import PassageStoreError
from membot.agent.store.schema import SourceRow
from membot.bot.service import BotService, CommandError
from membot.bot.wording import counted

TERMINAL_SCOPE = "terminal:local"


def parse_extensions(value: str | None) -> tuple[str, ...]:
    if not value:
        return SUPPORTED_EXTENSIONS
    exts = tuple("." + e.strip().lower().lstrip(".") for e in value.split(",") if e.strip())
    unknown = [e for e in exts if e not in SUPPORTED_EXTENSIONS]
    if unknown:
        raise CommandError(f"Unsupported extensions {', '.join(unknown)}; membot reads {', '.join(SUPPORTED_EXTENSIONS)}.")
    return exts


async def load_directory(
    service: BotService,
    name: str,
    input_files: list[Path] | None,
    input_dir: Path | None,
    *,
    recursive: bool,
    extensions: str | None,
    scope: str = TERMINAL_SCOPE,
) -> int:
    """Load files into source NAME; exit code 1 when any file failed, 2 when nothing could start."""
    if input_dir is not None and not await asyncio.to_thread(input_dir.is_dir):
        raise CommandError(f"{input_dir} is not a directory.")
    paths = await asyncio.to_thread(
        collect_paths, input_files, input_dir, recursive=recursive, extensions=parse_extensions(extensions)
    )
    if not paths:
        raise CommandError("No files to load.")
    await service.engine.passages.ready()  # a store in use elsewhere stops the load before any work
    try:
        source = await service.engine.catalog.get_or_create(scope, name)
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    passages = documents = failed = already = 0
    bar = tqdm(paths, desc="Loading files", unit="file", file=sys.stderr, disable=None)
    for path in bar:
        outcome = await service.engine.loader.load_path(source, path)
        if outcome.failed:
            failed += 1
            tqdm.write(f"Skipped {outcome.reason}", file=sys.stderr)
        elif outcome.status == "duplicate":  # not loaded now: it is not counted as loaded
            already += 1
            tqdm.write(f"{path.name} is already in {source.name}; nothing added", file=sys.stderr)
        else:
            passages += outcome.passages
            documents += outcome.documents
    bar.close()
    if not (passages or documents or already):
        await _drop_if_empty(service, source)  # a load that failed leaves no empty source behind
    print(load_summary(source.name, passages, documents, already))
    if failed:
        print(f"{failed} of {counted(len(paths), 'file')} failed (reasons above)", file=sys.stderr)
    return 1 if failed else 0


def load_summary(name: str, passages: int, documents: int, already: int) -> str:
    """What a load added, in words: files that were already there are said apart, never counted as loaded."""
    there = f"{counted(already, 'file')} {'was' if already == 1 else 'were'} already there"
    if not (passages or documents):
        return f"Nothing new loaded into {name}: {there}" if already else f"Nothing loaded into {name}"
    loaded = f"Loaded {counted(passages, 'passage')} and {counted(documents, 'document')} from {name}"
    return f"{loaded} ({there})" if already else loaded


async def _drop_if_empty(service: BotService, source: SourceRow) -> None:
    """Deletes a source without files (made by this load, whose files all failed)."""
    try:
        await service.engine.catalog.delete_if_empty(source)
    except (SourceError, PassageStoreError) as exc:  # harmless to leave; the failures were said already
        print(f"Could not delete the empty source {source.name}: {exc}", file=sys.stderr)


async def list_sources(service: BotService, scope: str | None) -> int:
    items = await service.engine.catalog.list(scope)
    if not items:
        print("No data sources. Load one with: membot load directory --name NAME --input-files FILE")
        return 0
    width = max(len(i.name) for i in items)
    for item in items:
        print(f"{item.name:<{width}}  {counted(item.documents, 'document'):>15}  {counted(item.passages, 'passage'):>16}  "
              f"({item.scope})")
    return 0


async def delete_source(service: BotService, name: str, scope: str) -> int:
    try:
        info = await service.engine.catalog.delete(scope, name)
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    print(f"Deleted {info.name} and its {counted(info.passages, 'passage')}")
    return 0
