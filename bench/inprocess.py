"""The agent's own Python per request, without gRPC: where a SignBatch item and a SignStream message go.

    python -m bench.inprocess [--batches 20] [--profile] [--base /dev/shm]

Builds what `serve` builds (token keyring, guard with its audit file, nonces, metrics, the Signer
service) on a throw-away SoftHSM2 token, with a realistic key policy (an endpoint allow-list, a
symbol list and an order cap), and calls the service's SignBatch and SignStream handlers directly
with the bench's Binance order. Prints microseconds per item, and with --profile the cProfile top
functions per item (self and inclusive), so the cost per item can be read line by line. The RPC
layer is left out on purpose: bench.run measures it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import sign_request
from bench.deploy import Deployment
from signing_agent_client._proto import signer_pb2

# What a platform's key grants: its order endpoint, its symbols, a cap per order.
POLICY = (
    '[bots.{bot}]\nkeys = ["{label}"]\n\n'
    '[keys.{label}]\nendpoints = ["POST /api/v3/order", "DELETE /api/v3/order", "GET /api/v3/openOrders"]\n'
    'symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]\nmax_order = {{ BTCUSDT = "0.5", "*" = "100" }}\n'
)


class _Context:
    """The few ServicerContext calls the handlers make: the caller's bearer token, no client certificate."""

    def __init__(self, bearer: str) -> None:
        self._metadata = (("authorization", f"Bearer {bearer}"),)

    def invocation_metadata(self) -> Any:
        return self._metadata

    def auth_context(self) -> dict:
        return {}

    def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"aborted {code}: {message}")


def build(root: Path) -> tuple[Any, Any, Deployment]:
    """A deployment with its policy, and the service `serve` would build over it (no gRPC server)."""
    from agent.config import load_config
    from agent.custody import Keyring
    from agent.metrics import Metrics
    from agent.nonces import NonceStore
    from agent.server import build_guard
    from agent.service import SignerService
    from prometheus_client import CollectorRegistry

    deployment = Deployment.create(root, "inprocess")
    (deployment.root / "policy.toml").write_text(POLICY.format(bot="bench", label=deployment.label))
    config = load_config(deployment.config)
    keyring = Keyring.open(config.token)
    keyring.list_keys()  # the agent's start: every key indexed
    guard = build_guard(config, keyring)
    service = SignerService(keyring, NonceStore(config.state_dir), guard, Metrics(CollectorRegistry()))
    return service, guard, deployment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="batches of --size timed (and profiled)")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed batches and stream")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--base", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    args = parser.parse_args(argv)
    from agent.logs import configure

    # The agent's log as `serve` writes it (one JSON line per event), into the void: its cost counts, not its text.
    configure(open("/dev/null", "w"))  # noqa: SIM115 - for the life of the process

    with tempfile.TemporaryDirectory(prefix="bench-inprocess-", dir=args.base) as tmp:
        service, guard, deployment = build(Path(tmp))
        context = _Context(deployment.bearer_file.read_text().strip())
        item = sign_request(deployment.label)
        batch = signer_pb2.SignBatchRequest(requests=[item] * args.size)
        try:
            for _ in range(3):  # warm: caches, the first audit write, the token session
                answer = service.SignBatch(batch, context)
            refused = [r.refused for r in answer.results if r.WhichOneof("outcome") != "signed"]
            if refused:
                raise SystemExit(f"the bench's order was refused: {refused[0]}")
            out: dict[str, Any] = {"items_per_batch": args.size, "policy": "endpoints, symbols, max_order"}
            for name, run in (("batch", lambda: service.SignBatch(batch, context)),
                              ("stream", lambda: sum(1 for _ in service.SignStream(iter([item] * args.size),
                                                                                   context)))):
                profiler = cProfile.Profile() if args.profile else None
                started = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                for _ in range(args.batches):
                    run()
                if profiler is not None:
                    profiler.disable()
                items = args.batches * args.size
                per_item = (time.perf_counter() - started) / items * 1e6
                out[f"{name}_us_per_item"] = round(per_item, 1)
                print(f"{name}: {per_item:.1f} us per item ({items} items{', profiled' if profiler else ''})",
                      flush=True)
                if profiler is not None:
                    out[f"{name}_profile"] = _top(profiler, items, args.top)
            out["stages_us"] = stages(service, deployment.label, item)
            print(json.dumps({k: v for k, v in out.items() if not k.endswith("_profile")}), flush=True)
        finally:
            guard.stop()
            service._keyring.close()  # noqa: SLF001 - the harness owns the keyring it built
    return 0


def stages(service: Any, label: str, item: signer_pb2.SignRequest, repeat: int = 3000) -> dict[str, float]:
    """The median microseconds of each stage of one item, run alone in a loop on the same objects: what
    `_decision` and the batch's sinks spend, without a profiler's overhead inflating small calls."""
    from agent.decision import Decision, StreamTally, emit
    from agent.guard import Caller
    from agent.policy import evaluate
    from agent.send.ticket import SIGN, Ticket
    from agent.service import request_from_proto

    guard, keyring = service._guard, service._keyring  # noqa: SLF001 - the harness times the service's parts
    caller, now_ms = Caller("bench"), service._clock_ms()  # noqa: SLF001
    request = service._validated(item, now_ms)  # noqa: SLF001
    _, key_policy = guard.admit(caller, label)
    entry, exchange = service._lookup(label)  # noqa: SLF001
    created = entry.info.created
    verdict = evaluate(key_policy, exchange, request, created=created, timestamp_ms=0, now_ms=now_ms)
    decision = Decision(bot="bench", key=label, method="POST", path="/api/v3/order", status="OK", exchange="binance",
                        symbols=verdict.symbols, policy_digest=guard.policy.digest)
    hundred = [decision] * 100
    tally = StreamTally(service._log, "bench")  # noqa: SLF001 - the stream's log, as SignStream keeps it
    parts = {
        "from proto": lambda: request_from_proto(item),
        "validated (proto, label, shape)": lambda: service._validated(item, now_ms),  # noqa: SLF001
        "admit (grant, key policy)": lambda: guard.admit(caller, label),
        "lookup (key, exchange)": lambda: service._lookup(label),  # noqa: SLF001
        "ticket (delivery)": lambda: Ticket(SIGN).admit(key_policy, exchange, entry, request),
        "evaluate (the rules)": lambda: evaluate(key_policy, exchange, request, created=created, timestamp_ms=0,
                                                 now_ms=now_ms),
        "guardrails": lambda: guard.guardrails.check(bot=None, bot_name="bench", key_policy=key_policy,
                                                     exchange=exchange, verdict=verdict, now=time.time()),
        "scheme + token": lambda: service._sign_with(exchange, entry, request, 0, now_ms),  # noqa: SLF001
        "token HMAC alone": lambda: keyring.hmac(entry, b"x" * 109, "sha256"),
        "sinks per item (emit_batch of 100 / 100)": lambda: service_emit(hundred),
        "sinks per stream message (emit)": lambda: emit(decision, guard=guard, metrics=service._metrics,  # noqa: SLF001
                                                        log=service._log, tally=tally),  # noqa: SLF001
        "answer per item (a response of 100 / 100)": lambda: _answers(service, exchange, entry, request, now_ms),
    }

    def service_emit(decisions: list) -> None:
        from agent.decision import emit_batch

        emit_batch(decisions, guard=guard, metrics=service._metrics, log=service._log, bot="bench",  # noqa: SLF001
                   latency_ms=0.0)

    out = {}
    for name, fn in parts.items():
        times = []
        for _ in range(repeat if "100" not in name else repeat // 30):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        times.sort()
        median = times[len(times) // 2] / 1000 / (100 if "100" in name else 1)
        out[name] = round(median, 1)
    print("  stages, median us each (one item):")
    for name, us in out.items():
        print(f"    {us:7.1f}  {name}")
    return out


_SIGNED: dict = {}


def _answers(service: Any, exchange: Any, entry: Any, request: Any, now_ms: int, count: int = 100) -> Any:
    """COUNT signed items written into one SignBatchResponse, as SignBatch writes its answer."""
    from agent.service import _write_result

    if "signed" not in _SIGNED:
        _SIGNED["signed"] = service._sign_with(exchange, entry, request, 0, now_ms)  # noqa: SLF001
    answer = signer_pb2.SignBatchResponse()
    add = answer.results.add
    for _ in range(count):
        _write_result(add(), "OK", "", _SIGNED["signed"])
    return answer


def _top(profiler: cProfile.Profile, items: int, count: int) -> dict[str, list]:
    """The costliest functions per item: by self time, and by inclusive time."""
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, calls, self_s, incl_s, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = path.split("/site-packages/")[-1].split("/wt-lean/")[-1].split("/main/")[-1]
        rows.append((f"{name} ({short}:{line})", calls / items, self_s / items * 1e6, incl_s / items * 1e6))
    by_self = sorted(rows, key=lambda r: -r[2])[:count]
    by_incl = sorted(rows, key=lambda r: -r[3])[:count]
    for title, table, col in (("self", by_self, 2), ("inclusive", by_incl, 3)):
        print(f"  top by {title} time (us per item, calls per item):")
        for row in table:
            print(f"    {row[col]:7.2f}  {row[1]:5.1f}  {row[0]}")
    return {"self_us": [[r[0], round(r[2], 2), round(r[1], 2)] for r in by_self],
            "inclusive_us": [[r[0], round(r[3], 2), round(r[1], 2)] for r in by_incl]}


if __name__ == "__main__":
    sys.exit(main())
