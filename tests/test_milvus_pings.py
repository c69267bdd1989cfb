"""pymilvus pings every connection, idle or not. The servers membot runs (shared Milvus Lite) and the one the tests
stand in for Milvus standalone must permit those pings, or an idle bot's next call fails ("too_many_pings")."""

from __future__ import annotations

import time
from concurrent import futures
from pathlib import Path

import grpc
from milvus_lite.adapter.grpc.servicer import MilvusServicer
from milvus_lite.db import MilvusLite
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

from membot.agent.store.lite_server import grpc_server

PING_MS = 300  # the client's ping interval, scaled down from pymilvus's 10 s
IDLE_SECONDS = 4.0  # a server that refuses the pings closes the connection after about 3 s of them
CLIENT_OPTIONS = [("grpc.keepalive_time_ms", PING_MS), ("grpc.keepalive_timeout_ms", 5000),
                  ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]


def test_an_idle_client_that_pings_keeps_its_connection(tmp_path: Path) -> None:
    """Ours keeps it; a server with gRPC's default policy (the control, which shows the check sees the failure)
    closes it."""
    db = MilvusLite(str(tmp_path / "milvus"))
    ours = grpc_server(MilvusServicer(db), min_ping_seconds=PING_MS / 1000 / 2)
    default = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), default)
    states: dict[str, list[grpc.ChannelConnectivity]] = {"ours": [], "default": []}
    channels = {}
    try:
        for name, server in (("ours", ours), ("default", default)):
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            channels[name] = grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS)
            milvus_pb2_grpc.MilvusServiceStub(channels[name]).GetVersion(milvus_pb2.GetVersionRequest(), timeout=10)
            channels[name].subscribe(states[name].append)
        time.sleep(IDLE_SECONDS)
        for channel in channels.values():
            milvus_pb2_grpc.MilvusServiceStub(channel).GetVersion(milvus_pb2.GetVersionRequest(), timeout=10)
    finally:
        for channel in channels.values():
            channel.close()
        for server in (ours, default):
            server.stop(grace=0).wait()
        db.close()
    assert set(states["ours"]) == {grpc.ChannelConnectivity.READY}, states
    assert grpc.ChannelConnectivity.IDLE in states["default"], states
