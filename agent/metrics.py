"""Observability: Prometheus metrics on a local port, and the token status behind gRPC health.

Metrics (`[metrics] listen = "127.0.0.1:9464"`, loopback only: they name keys and bots):
  signing_agent_sign_total{exchange, outcome}      decisions; outcome = signed | refused | error status
  signing_agent_refusals_total{rule}               refusals by the policy rule that made them
  signing_agent_sign_latency_seconds               histogram of decision latency (signed and refused)
  signing_agent_token_up                           1 while the token answers, 0 while it does not
  signing_agent_send_total{exchange, outcome}      Send: the exchange's answer (2xx, 4xx, 429, 5xx, reconciled)
                                                   or the agent's failure status (unavailable, deadline_exceeded...)
  signing_agent_send_seconds                       histogram of Send's exchange part (attempts, retries, lookups)
  signing_agent_unwrap_cache_total{event}          wrapped keys: hit (cached session object), miss (an unwrap),
                                                   eviction (the bounded cache dropped one)

With several worker processes, each writes its own values under `PROMETHEUS_MULTIPROC_DIR`
(set by `serve --workers` before prometheus_client is first imported) and the supervisor
serves their sum.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 40.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kwargs = {"registry": registry} if registry is not None else {}
        self.signs = Counter("signing_agent_sign", "Sign decisions by exchange and outcome",
                             ["exchange", "outcome"], **kwargs)
        self.refusals = Counter("signing_agent_refusals", "Refusals by policy rule", ["rule"], **kwargs)
        self.latency = Histogram("signing_agent_sign_latency_seconds", "Decision latency, signed or refused",
                                 buckets=LATENCY_BUCKETS, **kwargs)
        self.token_up = Gauge("signing_agent_token_up", "1 while the token answers", multiprocess_mode="min",
                              **kwargs)
        self.token_up.set(1)
        self.sends = Counter("signing_agent_send", "Send: exchange answers and failures by exchange",
                             ["exchange", "outcome"], **kwargs)
        self.send_latency = Histogram("signing_agent_send_seconds", "Send: time spent on the exchange",
                                      buckets=SEND_BUCKETS, **kwargs)
        self.unwrap_cache = Counter("signing_agent_unwrap_cache", "Wrapped keys' unwrapped-object cache",
                                    ["event"], **kwargs)

    def decision(self, *, exchange: str, status: str, rule: str, latency_s: float) -> None:
        self.decisions([(exchange, status, rule, latency_s)])

    def decisions(self, items: list[tuple[str, str, str, float]]) -> None:
        """Count ITEMS (exchange, status, rule, latency in seconds): each labelled counter is
        incremented once per distinct label set, so a batch pays the label lookups once, not per item."""
        signs: dict[tuple[str, str], int] = {}
        refusals: dict[str, int] = {}
        observe = self.latency.observe
        for exchange, status, rule, latency_s in items:
            outcome = "signed" if status == "OK" else ("refused" if rule else status.lower())
            slot = (exchange or "-", outcome)
            signs[slot] = signs.get(slot, 0) + 1
            if rule:
                refusals[rule] = refusals.get(rule, 0) + 1
            observe(latency_s)
        for (exchange, outcome), count in signs.items():
            self.signs.labels(exchange=exchange, outcome=outcome).inc(count)
        for rule, count in refusals.items():
            self.refusals.labels(rule=rule).inc(count)


    def sent(self, *, exchange: str, outcome: str, seconds: float) -> None:
        self.sends.labels(exchange=exchange, outcome=outcome).inc()
        self.send_latency.observe(seconds)


def serve_metrics(listen: str, multiproc_dir: Path | None = None) -> None:
    """Start the /metrics HTTP endpoint (a daemon thread). MULTIPROC_DIR: sum the workers' files."""
    host, _, port = listen.rpartition(":")
    registry = None
    if multiproc_dir is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))
    start_http_server(int(port), addr=host.strip("[]"), **({"registry": registry} if registry else {}))
