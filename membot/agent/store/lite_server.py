"""The shared Milvus Lite server of one data directory (started by `lite_shared`, never by hand).

`python -m membot.agent.store.lite_server DATA_DIR TOKEN IDLE_SECONDS` detaches (a second fork in a session of its own),
serves DATA_DIR over gRPC on a loopback port the kernel picks, records the port with TOKEN (so that its
starter knows the record is its own), and stops when nobody has used it for IDLE_SECONDS (see lite_shared).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import IO, Any

from membot.agent.store.lite_shared import LiteFiles

POLL_SECONDS = 0.5
MAX_MESSAGE = 256 * 1024 * 1024  # as Milvus Lite's own server
WORKERS = 10
# pymilvus pings every connection (10 s apart, idle or not). A gRPC server's default refuses pings more often
# than every 5 minutes without data and, after two, closes the connection ("too_many_pings"), which fails the
# next call of a bot that sat idle. Milvus standalone permits pings 5 s apart, with or without calls.
MIN_PING_SECONDS = 5.0

log = logging.getLogger("membot.lite_server")


def main(argv: list[str]) -> int:
    data, token, idle_seconds = Path(argv[0]), argv[1], float(argv[2])
    if os.fork():  # the starter's child returns at once; the server goes on in a grandchild
        return 0
    os.setsid()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # which CPU build it loaded
    files = LiteFiles(data)
    alive = files.alive.open("a+")
    try:
        fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        files.write_record(token, error=f"another Milvus Lite server already serves {data}")
        return 1
    try:
        serve(files, token, idle_seconds)
    except Exception as exc:
        log.exception("the Milvus Lite server for %s failed", data)
        files.write_record(token, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        return 1
    return 0


def serve(files: LiteFiles, token: str, idle_seconds: float) -> None:
    """Blocking: serve until idle or told to stop (SIGTERM, SIGINT)."""
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite
    from milvus_lite.exceptions import DataDirLockedError

    from membot.agent.store.milvus_layout import quiet_index_training

    quiet_index_training()
    # Milvus Lite logs a traceback for calls it does not implement (AllocTimestamp); the client carries on.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    try:
        db = MilvusLite(str(files.data))
    except DataDirLockedError:
        raise RuntimeError(
            f"{files.data} is open in another process that does not share it (a membot from before shared "
            "Milvus Lite, or a script): stop that process"
        ) from None
    # Held exclusively once the server stops for want of users, until the process ends: a process that wants
    # the server meanwhile waits for this one to be gone, then starts another.
    users = files.users.open("a+")
    try:
        server = grpc_server(MilvusServicer(db))
        port = server.add_insecure_port("127.0.0.1:0")
        if not port:
            raise RuntimeError("no loopback port could be bound")
        server.start()
        try:
            files.write_record(token, port)
            log.info("serving %s on 127.0.0.1:%d (pid %d)", files.data, port, os.getpid())
            _wait_until_unused(users, idle_seconds)
        finally:
            files.record.unlink(missing_ok=True)
            server.stop(grace=5).wait()
    finally:
        db.close()
    log.info("stopped serving %s", files.data)


def grpc_server(servicer: object, min_ping_seconds: float = MIN_PING_SECONDS) -> Any:
    """A gRPC server (not started) for a Milvus servicer, with the limits and ping policy of Milvus standalone."""
    import grpc
    from pymilvus.grpc_gen import milvus_pb2_grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # Without SO_REUSEPORT the port is ours alone: no second server can bind it and split the calls.
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(min_ping_seconds * 1000)),
        ],
    )
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(servicer, server)
    return server


def _wait_until_unused(users: IO[str], idle_seconds: float) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    idle_since: float | None = None
    while not stop.wait(POLL_SECONDS):
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None  # someone uses it
            continue
        now = time.monotonic()
        idle_since = idle_since or now
        if now - idle_since >= idle_seconds:
            log.info("unused for %.1f s: stopping", idle_seconds)
            return
        fcntl.flock(users, fcntl.LOCK_UN)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
