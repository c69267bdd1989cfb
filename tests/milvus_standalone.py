"""A stand-in for a Milvus standalone server: Milvus Lite's servicer over gRPC on a given loopback port, with
Milvus standalone's ping policy (`python tests/milvus_standalone.py DATA_DIR PORT`). `milvus-lite server`
refuses pymilvus's keepalive pings and drops idle clients, which no real Milvus server does.
"""

from __future__ import annotations

import signal
import sys
import threading


def main(data_dir: str, port: int) -> int:
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite

    from membot.agent.store.lite_server import grpc_server

    db = MilvusLite(data_dir)
    server = grpc_server(MilvusServicer(db))
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        print(f"port {port} could not be bound", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    stop.wait()
    server.stop(grace=2).wait()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
