"""The transport baseline: the Signer service with nothing behind it.

Same generated code, messages, server options and thread pool as the agent
(agent.server), on the same kinds of socket; Sign parses the request and returns
a response the size and shape of the agent's; SignBatch returns one per item, SignStream one
per message.
What the agent costs beyond this is the agent's own work.

    python -m bench.echo --unix PATH [--tcp 127.0.0.1:PORT]     (prints "ready", stops on SIGTERM)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from bench.common import signed_response_like_the_agent

# As agent.server builds its server (kept in step by hand: that module is not imported here,
# so the echo starts the same whatever the agent's version).
THREADS = 8
MAX_MESSAGE_BYTES = 1 << 20
# The agent's transport limits (agent.server: connections, streams, handshake, idle, keepalive).
TRANSPORT_OPTIONS = [
    ("grpc.max_allowed_incoming_connections", 512), ("grpc.max_concurrent_streams", 128),
    ("grpc.server_handshake_timeout_ms", 10_000), ("grpc.http2.settings_timeout", 10_000),
    ("grpc.max_connection_idle_ms", 300_000), ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


class Echo(signer_pb2_grpc.SignerServicer):
    def __init__(self) -> None:
        self._response = signed_response_like_the_agent()

    def Sign(self, request: signer_pb2.SignRequest, context: grpc.ServicerContext) -> signer_pb2.SignedRequest:
        return self._response

    def SignBatch(
        self, request: signer_pb2.SignBatchRequest, context: grpc.ServicerContext
    ) -> signer_pb2.SignBatchResponse:
        return signer_pb2.SignBatchResponse(
            results=[signer_pb2.SignResult(signed=self._response) for _ in request.requests])

    def SignStream(self, requests, context: grpc.ServicerContext):
        # Absent from the generated servicer of an agent version without SignStream: then UNIMPLEMENTED.
        result = signer_pb2.SignResult(signed=self._response)
        for _ in requests:
            yield result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--unix", required=True)
    parser.add_argument("--tcp")
    args = parser.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0), *TRANSPORT_OPTIONS],
    )
    signer_pb2_grpc.add_SignerServicer_to_server(Echo(), server)
    server.add_insecure_port(f"unix:{args.unix}")
    if args.tcp and server.add_insecure_port(args.tcp) == 0:
        print(f"cannot listen on {args.tcp}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
