"""Webhook alerts against real local receivers (http.server on 127.0.0.1, and TLS): delivery, retries,
refusals, a full queue, and alert() never waiting on the network."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.alerts import AlertSender


class Log:
    """Records what the sender logs (a structlog-like logger)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw) -> None:
        self.events.append((event, kw))

    info = error = warning

    def named(self, event: str) -> list[dict]:
        return [kw for e, kw in self.events if e == event]


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next of STATUSES (then 200)."""

    def __init__(self, statuses=(), *, hold: threading.Event | None = None, tls: ssl.SSLContext | None = None,
                 hang_up: bool = False):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []  # every POST received, accepted or not
        self.peers: set[tuple] = set()
        self.entered = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                receiver.peers.add(self.client_address)
                receiver.entered.set()
                if hold is not None:
                    hold.wait(10)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.close_connection = hang_up  # closes without saying so, as idle-timeouts do

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN?channel=ops"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []
    holds: list[threading.Event] = []

    def make(statuses=(), *, hold=None, tls=None, hang_up=False) -> Receiver:
        r = Receiver(statuses, hold=hold, tls=tls, hang_up=hang_up)
        made.append(r)
        if hold is not None:
            holds.append(hold)
        return r

    yield make
    for h in holds:
        h.set()
    for r in made:
        r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -- URL validation -----------------------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/hook", "must start with https://"),
    ("example.com/hook", "got no scheme"),
    ("http://", "no host"),
    ("https:///hooks/x", "no host"),
    ("https://ops:hunter2pass@example.com/hook", "must not carry credentials"),
    ("https://example.com:99999/hook", "invalid port"),
    ("https://example.com/ho ok", "spaces or control characters"),
    ("", "empty"),
])
def test_bad_urls_are_refused_with_a_clear_message(url: str, message: str):
    with pytest.raises(ValueError, match=message) as err:
        AlertSender(url, log=Log())
    assert "hunter2pass" not in str(err.value) and "/hook" not in str(err.value)  # the URL is not echoed


def test_plain_http_off_the_host_is_flagged_and_the_path_never_logged():
    for url, flagged in [("http://alerts.example.com/hooks/S3CRET", True), ("https://alerts.example.com/hooks/S3CRET", False),
                         ("http://127.0.0.1:9/hooks/S3CRET", False), ("http://[::1]:9/hooks/S3CRET", False)]:
        log = Log()
        sender = AlertSender(url, log=log, max_attempts=1)
        sender.close(timeout=0)
        assert bool(log.named("alert.insecure_url")) == flagged, url
        assert "S3CRET" not in repr(log.events)


# -- delivery -----------------------------------------------------------------------------


def test_alerts_arrive_as_json_over_one_kept_alive_connection(receivers):
    r = receivers()
    log = Log()
    sender = AlertSender(r.url, log=log)
    sender.alert("policy.refused", label="binance-main", path="/sapi/v1/capital/withdraw/apply", count=3)
    sender.alert("burst", label="okx-main", rate=41.5, tags=["a", "b"], kind="ignored", bad=float("nan"), obj=object())
    sender.alert("burst", label="okx-main", n=3)
    sender.close()
    assert [b["kind"] for b in r.bodies] == ["policy.refused", "burst", "burst"]
    first, second = r.bodies[0], r.bodies[1]
    assert first["label"] == "binance-main" and first["count"] == 3 and first["path"].startswith("/sapi/")
    datetime.datetime.strptime(first["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert second["rate"] == 41.5 and second["tags"] == ["a", "b"] and second["bad"] == "nan"
    assert second["obj"].startswith("<object")  # not JSON: sent as text, never an exception
    assert len(r.peers) == 1  # one connection for all three
    assert sender.stats().sent == 3 and sender.stats().dropped == 0
    assert [kw["kind"] for kw in log.named("alert")] == ["policy.refused", "burst", "burst"]
    assert log.named("alert")[0]["label"] == "binance-main"


def test_a_kept_alive_connection_the_receiver_closed_is_replaced_without_a_retry(receivers):
    r = receivers(hang_up=True)
    sender = AlertSender(r.url, backoff=5.0, log=Log())  # a counted retry would wait seconds
    for n in range(3):
        sender.alert("burst", n=n)
        wait_for(lambda: sender.stats().sent == n + 1, timeout=3)
    sender.close()
    assert [b["n"] for b in r.bodies] == [0, 1, 2] and len(r.peers) == 3
    assert sender.stats().retried == 0


def test_503_twice_then_accepted_arrives_after_retries(receivers):
    r = receivers([503, 503])
    sender = AlertSender(r.url, backoff=0.01, log=Log())
    sender.alert("policy.refused", label="k1")
    wait_for(lambda: sender.stats().sent == 1)
    sender.close()
    assert [b["label"] for b in r.bodies] == ["k1"] * 3
    stats = sender.stats()
    assert (stats.sent, stats.retried, stats.dropped) == (1, 2, 0)


def test_429_is_retried_but_400_is_not(receivers):
    r = receivers([429, 400])
    log = Log()
    sender = AlertSender(r.url, backoff=0.01, log=log)
    sender.alert("a")  # 429, then 400: refused
    sender.alert("b")  # 200
    sender.close()
    assert [b["kind"] for b in r.bodies] == ["a", "a", "b"]
    stats = sender.stats()
    assert (stats.sent, stats.retried, stats.dropped) == (1, 1, 1)
    (dropped,) = log.named("alert.dropped")
    assert dropped["kind"] == "a" and "HTTP 400" in dropped["reason"] and "not retried" in dropped["reason"]


def test_a_receiver_that_is_down_costs_alert_nothing_and_the_alert_is_dropped_after_the_attempts():
    log = Log()
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    sender = AlertSender(url, backoff=0.01, max_attempts=3, log=log)
    sender.alert("policy.refused", label="k")
    wait_for(lambda: sender.stats().dropped == 1)
    stats = sender.stats()
    assert (stats.sent, stats.retried, stats.dropped) == (0, 2, 1)
    (dropped,) = log.named("alert.dropped")
    assert "gave up after 3 attempts" in dropped["reason"] and "ConnectionRefused" in dropped["reason"]
    assert dropped["host"] == url.split("/")[2]
    sender.close()


def test_alert_never_waits_on_a_hung_receiver(receivers):
    hold = threading.Event()
    r = receivers(hold=hold)  # accepts, then does not answer
    baseline, sender = AlertSender(None, log=Log()), AlertSender(r.url, timeout=5.0, log=Log())
    sender.alert("first")
    assert r.entered.wait(5)  # the delivery thread is now stuck in the POST

    def per_call(s: AlertSender) -> list[float]:
        times = []
        for i in range(200):
            t0 = time.perf_counter()
            s.alert("burst", label="k", n=i)
            times.append(time.perf_counter() - t0)
        return times

    base, hung = per_call(baseline), per_call(sender)
    print(f"alert(): no url {sum(base) / 200 * 1e6:.0f} us, hung receiver {sum(hung) / 200 * 1e6:.0f} us per call")
    assert max(hung) < 0.05  # the POST waits up to 5 s; alert() must not wait on it at all
    assert sum(hung) / sum(base) < 50  # logging + JSON + a queue append (about 8x), nothing more
    hold.set()
    sender.close()
    assert sender.stats().sent == 201


def test_full_queue_drops_the_oldest_and_counts_it(receivers):
    hold = threading.Event()
    r = receivers(hold=hold)
    log = Log()
    sender = AlertSender(r.url, max_queue=3, log=log)
    sender.alert("burst", n=0)
    assert r.entered.wait(5)  # n=0 is in flight, the queue is empty
    for n in range(1, 6):
        sender.alert("burst", n=n)  # the queue holds 3: n=1 and n=2 are pushed out
    assert sender.stats().dropped == 2 and sender.stats().queued == 3
    hold.set()
    sender.close()
    assert [b["n"] for b in r.bodies] == [0, 3, 4, 5]
    assert sender.stats().sent == 4
    assert [d["reason"] for d in log.named("alert.dropped")] == ["queue full: the oldest alert was dropped"] * 2


def test_close_gives_up_at_its_timeout_and_counts_what_is_left(receivers):
    hold = threading.Event()
    r = receivers(hold=hold)
    log = Log()
    sender = AlertSender(r.url, timeout=5.0, log=log)
    for n in range(3):
        sender.alert("burst", n=n)
    assert r.entered.wait(5)
    t0 = time.monotonic()
    sender.close(timeout=0.2)
    assert time.monotonic() - t0 < 1.0
    assert sender.stats().dropped == 2  # the two queued; the one in flight is decided by its POST
    sender.alert("late")  # after close: logged and counted, never raised
    assert sender.stats().dropped == 3
    assert {d["reason"] for d in log.named("alert.dropped")} == {"not delivered before close", "the alert sender is closed"}
    hold.set()


def test_without_url_alerts_are_only_logged():
    log = Log()
    sender = AlertSender(None, log=log)
    sender.alert("policy.refused", label="k", event="ignored")
    sender.close()
    assert log.named("alert") == [{"kind": "policy.refused", "label": "k"}]
    assert sender.stats().sent == sender.stats().dropped == 0


def test_default_logger_is_the_agents_structlog():
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        AlertSender(None).alert("policy.refused", label="k", path="/api/v3/order")
    assert logs == [{"event": "alert", "log_level": "warning", "kind": "policy.refused", "label": "k",
                     "path": "/api/v3/order"}]


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_https_receiver_with_an_untrusted_certificate_gets_nothing(receivers, tls_files):
    r = receivers(tls=tls_server_context(*tls_files))
    log = Log()
    sender = AlertSender(r.url, backoff=0.01, max_attempts=2, log=log)
    sender.alert("policy.refused")
    wait_for(lambda: sender.stats().dropped == 1)
    sender.close()
    assert r.bodies == []
    assert "CERTIFICATE_VERIFY_FAILED" in log.named("alert.dropped")[0]["reason"]


def test_https_receiver_with_a_trusted_certificate_gets_the_alert(receivers, tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))  # trusted by the default context, as a system CA would be
    r = receivers(tls=tls_server_context(*tls_files))
    sender = AlertSender(r.url, log=Log())
    sender.alert("policy.refused", label="k")
    sender.close()
    assert [b["kind"] for b in r.bodies] == ["policy.refused"] and sender.stats().sent == 1
