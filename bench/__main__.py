"""`python -m bench [--quick] [--profile] [NAME...]`: run the benchmarks (all by default) one after the other,
then print one table (Markdown, so it can go into the README as it is).

Each benchmark runs in a process of its own, in a fresh temporary MEMBOT_HOME: Milvus Lite keeps its
server threads and memory for the life of the process that opened it, and a 1.5 GB collection left behind
by one benchmark slowed the next one down threefold. A benchmark that fails gets an error row; the others
still run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import metadata
from typing import Any

# Milvus Lite's gRPC core logs keepalive chatter ("too_many_pings") straight to stderr; errors that matter
# reach us as exceptions anyway. Must be set before grpc is imported (below, through bench -> membot).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from bench import ROOT, Row, Target, fmt  # noqa: E402
from tests.cli_helpers import SETTING_PREFIXES  # noqa: E402

# The line of a child's stdout that carries its rows back to the parent.
MARKER = "BENCH-ROWS "

BENCHMARKS = (
    "step_overhead",
    "concurrency",
    "ingestion",
    "archival_search",
    "conversation_search",
    "idle_memory",
    "prompt_size",
    "recall_quality",
    "dense_recall",
    "cjk_search",
    "reflection",
    "platform",
)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check, not figures")
    parser.add_argument(
        "--profile", action="store_true", help="profile each benchmark with pyinstrument (text to stderr)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # run one, in this process
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def _run_one(name: str, quick: bool, profile: bool) -> tuple[list[Row], float]:
    module = importlib.import_module(f"bench.{name}")
    run: Callable[[bool], Awaitable[list[Row]]] = module.run
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    start = time.perf_counter()
    try:
        rows = asyncio.run(run(quick))
    except Exception as exc:  # one broken benchmark must not cost the figures of the others
        traceback.print_exc()
        rows = [Row(name, f"FAILED: {type(exc).__name__}: {str(exc)[:200]}", 0.0, "")]
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False), file=sys.stderr)
    return rows, elapsed


def _in_child(name: str, quick: bool, profile: bool) -> tuple[list[Row], float]:
    """Run one benchmark in a fresh interpreter and read its rows back from its stdout."""
    command = [sys.executable, "-m", "bench", "--child", name] + ["--quick"] * quick + ["--profile"] * profile
    start = time.perf_counter()
    # stderr is inherited: progress and profiles show as they come.
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            return [_row(item) for item in json.loads(line[len(MARKER):])], elapsed
    return [Row(name, f"FAILED: the benchmark process exited with {done.returncode}", 0.0, "")], elapsed


def _row(item: dict[str, Any]) -> Row:
    target = item.pop("target")
    return Row(**item, target=Target(**target) if target else None)


def table(rows: list[Row]) -> str:
    header = ["benchmark", "figure", "baseline (same run)", "ratio", "target", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        figure = f"{row.figure}: **{fmt(row.value, row.unit)}**" if row.unit or row.value else row.figure
        if row.note:
            figure += f" ({row.note})"
        baseline = ""
        if row.baseline is not None:
            baseline = f"{row.baseline_label}: {fmt(row.baseline, row.unit)}"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        cells = [row.benchmark, figure, baseline, ratio, str(row.target or ""), met]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def _machine() -> str:
    """What the figures were measured on: they depend on it (aiohttp sends a request at once from Python 3.12
    on, a turn of the event loop later before)."""
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("aiohttp", "sqlalchemy", "pymilvus"))
    return f"Python {platform.python_version()}, {versions}; {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    # Settings exported in this shell (a real database or Milvus URI) must not reach the benchmarks' stores;
    # the child processes inherit the emptied environment.
    for name in [n for n in os.environ if n.startswith(SETTING_PREFIXES)]:
        del os.environ[name]
    # The product logs loudly in places (pypdf fonts, Milvus Lite); keep stderr for our progress lines.
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        got, _ = _run_one(args.names[0], args.quick, args.profile)
        print(MARKER + json.dumps([asdict(row) for row in got]), flush=True)
        return 0
    rows: list[Row] = []
    total = time.perf_counter()
    for name in args.names or BENCHMARKS:
        print(f"[bench] {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        got, elapsed = _in_child(name, args.quick, args.profile)
        print(f"[bench] {name} took {elapsed:.1f} s", file=sys.stderr, flush=True)
        rows.extend(got)
    print(f"[bench] all done in {time.perf_counter() - total:.1f} s", file=sys.stderr, flush=True)
    print(f"{_machine()}\n")
    print(table(rows))
    return 1 if any(r.figure.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
