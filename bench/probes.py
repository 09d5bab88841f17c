"""Load generators, each run as its own process by bench.run: one JSON document on stdout.

    python -m bench.probes grpc  --target T [--batch N] ...   unary Sign (or SignBatch of N) calls
    python -m bench.probes floor --config C --label L ...     token HMACs in-process, no RPC; lookups
    python -m bench.probes bao   --addr A --bao-token-file F  OpenBao Transit HMAC (or batch_input of N)

Every probe warms up, waits for --start-at (so that concurrent clients start together),
then calls in a loop for --duration seconds, timing each call.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BATCH_METHOD, SIGN_METHOD, STREAM_METHOD, emit, sign_request, signing_input, timed_loop


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--start-at", type=float, default=None, help="time.time() instant to start measuring")
    p.add_argument("--batch", type=int, default=0, help="0: unary calls; N: batches of N")


def _window(lat: list[float], calls: int, wall: float, items_per_call: int) -> dict[str, Any]:
    end = time.time()
    return {"lat_us": lat, "calls": calls, "items": calls * items_per_call, "wall_s": wall,
            "window": [end - wall, end]}


# -- gRPC: the agent, or the echo service -------------------------------------------------


def probe_grpc(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from signing_agent_client._proto import signer_pb2

    options = [tuple(o) for o in json.loads(args.options)]
    channel = grpc.insecure_channel(args.target, options=options)
    metadata: tuple[tuple[str, str], ...] = ()
    if args.bearer_file:
        metadata = (("authorization", f"Bearer {Path(args.bearer_file).read_text().strip()}"),)
    request = sign_request(args.label)
    stream = None
    if args.stream:
        # One SignStream held open, one request at a time (ping-pong): each call's latency is one
        # request's round trip on the stream; items are requests, as for unary calls.
        import queue

        requests: queue.SimpleQueue = queue.SimpleQueue()
        open_stream = channel.stream_stream(STREAM_METHOD, request_serializer=signer_pb2.SignRequest.SerializeToString,
                                            response_deserializer=signer_pb2.SignResult.FromString)
        stream = open_stream(iter(requests.get, None), metadata=metadata)

        burst = max(1, args.batch)  # --batch N with --stream: N requests sent back to back, then N answers

        def call() -> Any:
            for _ in range(burst):
                requests.put(request)
            for _ in range(burst):
                result = next(stream)
                if result.WhichOneof("outcome") != "signed" or not (result.signed.path or result.signed.body):
                    raise RuntimeError(f"refused on the stream: {result.refused.code}: {result.refused.message}")
            return result.signed
    elif args.batch:
        call_batch = channel.unary_unary(BATCH_METHOD, request_serializer=signer_pb2.SignBatchRequest.SerializeToString,
                                         response_deserializer=signer_pb2.SignBatchResponse.FromString)
        batch = signer_pb2.SignBatchRequest(requests=[request] * args.batch)

        def call() -> Any:
            return call_batch(batch, timeout=30, metadata=metadata)
    else:
        call_sign = channel.unary_unary(SIGN_METHOD, request_serializer=signer_pb2.SignRequest.SerializeToString,
                                        response_deserializer=signer_pb2.SignedRequest.FromString)

        def call() -> Any:
            return call_sign(request, timeout=30, metadata=metadata)

    try:
        first = call()
    except grpc.RpcError as exc:
        return {"error": exc.code().name, "details": exc.details() or ""}
    except RuntimeError as exc:
        return {"error": "STREAM_REFUSED", "details": str(exc)}
    if args.batch and not args.stream:
        refused = [r.refused for r in first.results if r.WhichOneof("outcome") == "refused"]
        if len(first.results) != args.batch or refused:
            return {"error": "BATCH_REFUSED", "details": f"{len(first.results)} results; "
                    f"refusals: {refused[0].code + ': ' + refused[0].message if refused else 'none'}"}
        # Unary calls whose response is taken apart would cost as much; here too, every result is read.
        check = lambda r: all(x.signed.body for x in r.results)  # noqa: E731
    else:
        if not (first.body or first.path) or not first.headers:
            return {"error": "EMPTY_RESPONSE", "details": str(first)[:200]}
        check = None
    lat, calls, wall = timed_loop(call, warmup=args.warmup, duration=args.duration, start_at=args.start_at)
    if check is not None and not check(call()):
        return {"error": "BATCH_CHANGED", "details": "a later batch was not fully signed"}
    if stream is not None:
        requests.put(None)  # the end of the stream's requests
        stream.cancel()
    channel.close()
    return _window(lat, calls, wall, args.batch or 1)


# -- the floor: token HMACs in this process ---------------------------------------------


class _ClockNonces:
    """No nonce store in the floor: the bench's exchange signs a timestamp, not a nonce."""

    def next(self, exchange: str, api_key: str, floor: int) -> int:
        return floor


def _median_us(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    return round(times[len(times) // 2], 1)


def probe_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Token HMACs through custody (as the agent makes them), in a loop; and the cost of lookups."""
    from agent.config import load_config
    from agent.custody import KeyNotFound, Keyring, TokenCredential
    from agent.exchanges import scheme_for
    from agent.schemes import Environment, UnsignedRequest
    from bench.common import EXCHANGE, ORDER

    keyring = Keyring.open(load_config(Path(args.config)).token)
    out: dict[str, Any] = {}
    if args.lookups:
        def cold() -> None:
            keyring.forget_cached_handles()  # the bench measures the cache's absence
            keyring.lookup(args.label)

        def unknown() -> None:
            keyring.forget_cached_handles()  # "missing" is believed for a while otherwise
            try:
                keyring.lookup("bench-no-such-key")
            except KeyNotFound:
                pass

        t0 = time.perf_counter()
        count = len(keyring.list_keys())
        out["listing_s"] = round(time.perf_counter() - t0, 3)
        out["keys"] = count
        out["lookup_cold_us"] = _median_us(cold, 5)
        out["lookup_unknown_us"] = _median_us(unknown, 5)
        keyring.list_keys()  # the agent's start: every key indexed
        out["lookup_warm_us"] = _median_us(lambda: keyring.lookup(args.label), 10001)
    entry = keyring.lookup(args.label)
    message = signing_input()
    if args.mode == "hmac":
        def call() -> Any:
            return keyring.hmac(entry, message, "sha256")
    else:  # the agent's work for one request, without RPC: lookup, scheme, token
        scheme = scheme_for(EXCHANGE)
        request = UnsignedRequest(method="POST", path="/api/v3/order", query=(), body=ORDER)

        def call() -> Any:
            e = keyring.lookup(args.label)
            env = Environment(now_ms=time.time_ns() // 1_000_000, random_bytes=os.urandom)
            return scheme.sign(request.validated(), TokenCredential(keyring, e, _ClockNonces()), env)

    if args.pkcs11:  # the token call as python-pkcs11 makes it, for comparison with custody's ctypes call
        with keyring.python_pkcs11_signing():
            lat, calls, wall = timed_loop(call, warmup=args.warmup, duration=args.duration, start_at=args.start_at)
    else:
        lat, calls, wall = timed_loop(call, warmup=args.warmup, duration=args.duration, start_at=args.start_at)
    lean = keyring.lean_token_calls and not args.pkcs11
    keyring.close()
    return {**out, **_window(lat, calls, wall, 1), "token_call": "ctypes" if lean else "python-pkcs11"}


# -- OpenBao Transit ----------------------------------------------------------------------


def probe_bao(args: argparse.Namespace) -> dict[str, Any]:
    """HMACs from OpenBao Transit over one keep-alive HTTP/1.1 connection (http.client, json)."""
    host, port = args.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"X-Vault-Token": Path(args.bao_token_file).read_text().strip(), "Content-Type": "application/json"}
    path = f"/v1/transit/hmac/{args.key}/sha2-256"
    encoded = base64.b64encode(signing_input()).decode("ascii")
    if args.batch:
        payload: dict[str, Any] = {"batch_input": [{"input": encoded}] * args.batch}
    else:
        payload = {"input": encoded}

    def call() -> Any:
        # Built and parsed per call, as a gRPC client serialises and parses per call.
        conn.request("POST", path, body=json.dumps(payload), headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"OpenBao answered {response.status}: {body[:200]!r}")
        return json.loads(body)

    try:
        first = call()
    except (RuntimeError, OSError) as exc:
        return {"error": "OPENBAO", "details": str(exc)}
    data = first["data"]
    if args.batch:
        results = data["batch_results"]
        if len(results) != args.batch or not all(r.get("hmac", "").startswith("vault:v1:") for r in results):
            return {"error": "OPENBAO_BATCH", "details": json.dumps(results[:1])[:200]}
    elif not data["hmac"].startswith("vault:v1:"):
        return {"error": "OPENBAO", "details": "no hmac in the answer"}
    lat, calls, wall = timed_loop(call, warmup=args.warmup, duration=args.duration, start_at=args.start_at)
    conn.close()
    return _window(lat, calls, wall, args.batch or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probes")
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("grpc")
    p.add_argument("--target", required=True)
    p.add_argument("--options", default="[]", help="channel options, JSON list of [name, value]")
    p.add_argument("--label", required=True)
    p.add_argument("--bearer-file")
    p.add_argument("--stream", action="store_true",
                   help="requests on one SignStream: one at a time, or with --batch N, N sent before their answers")
    _common(p)
    p = sub.add_parser("floor")
    p.add_argument("--config", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--mode", choices=("hmac", "sign"), default="hmac")
    p.add_argument("--lookups", action="store_true", help="also time listing, cold, unknown and warm lookups")
    p.add_argument("--pkcs11", action="store_true", help="sign through python-pkcs11, not custody's ctypes call")
    _common(p)
    p = sub.add_parser("bao")
    p.add_argument("--addr", required=True)
    p.add_argument("--bao-token-file", required=True)
    p.add_argument("--key", default="bench")
    _common(p)
    args = parser.parse_args(argv)
    result = {"grpc": probe_grpc, "floor": probe_floor, "bao": probe_bao}[args.probe](args)
    result["pid"] = os.getpid()
    if args.start_at is not None:
        result["late_s"] = max(0.0, round(result.get("window", [args.start_at])[0] - args.start_at, 3))
    emit(result)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
