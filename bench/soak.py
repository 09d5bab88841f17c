"""Load and soak: several client processes sign through the real agent; every signature is checked.

    python bench/soak.py --seconds 60 [--clients 3]

Each client process (multiprocessing, spawn) sends Sign and SignBatch calls over the agent's Unix
socket, with random paths, parameters (unicode included) and timestamps, for a bounded time. It
computes every expected signed request itself, with Python's hmac and the secret it knows,
following Binance's published rule (HMAC-SHA256 hex over the percent-encoded query, then body),
and compares the agent's answer byte for byte. Any difference or unexpected status is an error.

Meanwhile the parent samples the agent process: resident memory (VmRSS in /proc/PID/status),
open file descriptors (/proc/PID/fd), and open PKCS#11 sessions. The last one is counted inside
the agent process, by the instrumented launcher below: on SIGUSR2 it takes the keyring's lock and
calls C_GetSessionInfo on every handle up to SESSION_SCAN, and writes how many answered CKR_OK.
(SoftHSM2 numbers sessions and objects from one counter starting at 1, restarted by C_Initialize;
with the two keys of these deployments every handle the agent gets is far below SESSION_SCAN.)
The launcher is the agent's own `main(["serve"])` plus that hook, and a SIGUSR1 hook that
finalizes the module (tests/agent/test_faults.py uses it); the load never sends SIGUSR1.

The soak prints ratios only (machine-independent): throughput and p99 latency of each window of
the run over the first window's (the baseline, measured in the same run after a warm-up), and
resident memory and descriptors at the end, and at most under load, over the idle level after
the warm-up; and the PKCS#11 session count before and after. tests/agent/test_load.py runs the same
engine for a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
MODULE = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
SESSION_SCAN = 4096
MISSING_LABEL = "load-absent-key"  # never imported: its items must come back NOT_FOUND, alone

# The real agent, plus two test hooks that act inside its process (see the module docstring):
#   SIGUSR2: write the number of open PKCS#11 sessions to $AGENT_PROBE_FILE (atomically).
#   SIGUSR1: C_Finalize the module, as a co-resident library calling C_Finalize would.
# Both hold the keyring's own lock, so they never run inside the module alongside a request.
INSTRUMENTED_AGENT = r'''
import ctypes, gc, os, signal, sys
from agent.cli import main
from agent.custody import Keyring

def _keyring():
    return next(o for o in gc.get_objects() if isinstance(o, Keyring))

def _module():
    return ctypes.CDLL(os.environ["AGENT_MODULE"])

def _sessions(signum, frame):
    kr = _keyring()
    lib = _module()
    info = ctypes.create_string_buffer(64)
    with kr.locked():
        count = sum(1 for h in range(1, int(os.environ.get("AGENT_SESSION_SCAN", "4096")) + 1)
                    if lib.C_GetSessionInfo(ctypes.c_ulong(h), info) == 0)
    path = os.environ["AGENT_PROBE_FILE"]
    with open(path + ".tmp", "w") as f:
        f.write(str(count))
    os.replace(path + ".tmp", path)

def _finalize(signum, frame):
    kr = _keyring()
    with kr.locked():
        rv = _module().C_Finalize(None)
    path = os.environ["AGENT_PROBE_FILE"] + ".finalized"
    with open(path + ".tmp", "w") as f:
        f.write(str(rv))
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR2, _sessions)
signal.signal(signal.SIGUSR1, _finalize)
sys.exit(main(sys.argv[1:]))
'''


def instrumented_command(config: Path) -> list[str]:
    return [sys.executable, "-c", INSTRUMENTED_AGENT, "--config", str(config), "serve"]


def instrumented_env(probe_file: Path) -> dict[str, str]:
    return {**os.environ, "AGENT_MODULE": MODULE, "AGENT_PROBE_FILE": str(probe_file),
            "AGENT_SESSION_SCAN": str(SESSION_SCAN)}


def open_sessions(pid: int, probe_file: Path, timeout: float = 10.0) -> int:
    """Ask the instrumented agent PID how many PKCS#11 sessions it has open."""
    probe_file.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not probe_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the agent did not answer the session probe")
        time.sleep(0.01)
    return int(probe_file.read_text())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the independent computation ---------------------------------------------------------------


def encode(params: list[tuple[str, str]]) -> str:
    """Binance's rule, as its docs state it: names and values percent-encoded as UTF-8, every byte
    but A-Z a-z 0-9 - _ . ~ escaped, joined as name=value&... (written here from the rule, not
    taken from the agent)."""
    return "&".join(f"{quote(n, safe='', encoding='utf-8')}={quote(v, safe='', encoding='utf-8')}"
                    for n, v in params)


def expected_binance(secret: str, path: str, query: list[tuple[str, str]],
                     body: list[tuple[str, str]] | None) -> tuple[str, str]:
    """(path with query, body) of the signed request, when TIMESTAMP is among the parameters."""
    q, b = encode(query), (encode(body) if body else "")
    mac = hmac.new(secret.encode(), (q + b).encode("ascii"), hashlib.sha256).hexdigest()
    if body:
        return (f"{path}?{q}" if q else path), f"{b}&signature={mac}"
    return f"{path}?{q}&signature={mac}" if q else f"{path}?signature={mac}", ""


# Values mix ASCII, separators the encoder must escape, and characters from several planes.
VALUE_CHARS = "abcXYZ019 .-_~&=%+/?#é中😀\u00a0ß€\u200b\U0001f680"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def random_params(rng: random.Random, count: int) -> list[tuple[str, str]]:
    names = set()
    while len(names) < count:
        names.add("p" + "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 10))))
    ordered = sorted(names, key=lambda _: rng.random())
    return [(n, "".join(rng.choice(VALUE_CHARS) for _ in range(rng.randint(0, 24)))) for n in ordered]


@dataclass
class Planned:
    """One request and the answer it must get."""

    request: object  # signer_pb2.SignRequest
    secret: str | None  # None: the key does not exist, NOT_FOUND expected
    path: str
    query: list[tuple[str, str]]
    body: list[tuple[str, str]] | None


def plan(rng: random.Random, keys: list[tuple[str, str]]) -> Planned:
    from signing_agent_client._proto import signer_pb2

    stamp = ("timestamp", str(rng.randint(1_600_000_000_000, 1_900_000_000_000)))
    path = "/api/v3/" + rng.choice(["order", "account", "openOrders", "myTrades", "allOrders"])
    if rng.random() < 0.03:
        label, secret = MISSING_LABEL, None
    else:
        label, secret = rng.choice(keys)
    # A query or a body, never both: Binance joins them with no separator, so the agent refuses both.
    params = random_params(rng, rng.randint(0, 8))
    if rng.random() < 0.5:
        method, query, body = "GET", [stamp] + params, None
    else:
        method, query, body = rng.choice(["POST", "DELETE", "PUT"]), [], [stamp] + params
    msg = signer_pb2.SignRequest(key=label, method=method, path=path,
                                 query=[signer_pb2.Param(name=n, value=v) for n, v in query],
                                 timestamp_ms=rng.choice([0, int(time.time() * 1000)]))
    if body is not None:
        msg.fields.items.extend(signer_pb2.Param(name=n, value=v) for n, v in body)
    return Planned(msg, secret, path, query, body)


def check(planned: Planned, code: str, signed, message: str = "") -> str | None:
    """None when the answer is the one expected, else what differs (never a secret)."""
    if planned.secret is None:
        return None if code == "NOT_FOUND" else f"absent key answered {code}: {message[:200]}"
    if code != "OK":
        return f"answered {code}: {message[:200]}"
    want_path, want_body = expected_binance(planned.secret, planned.path, planned.query, planned.body)
    if signed.path != want_path or signed.body != want_body:
        return f"differs from the independent computation ({planned.request.method} {planned.path})"
    return None


# -- one client process -------------------------------------------------------------------------


@dataclass
class ClientResult:
    calls: int = 0
    items: int = 0
    verified: int = 0
    expected_refusals: int = 0
    errors: list[str] = field(default_factory=list)
    # (monotonic end time, latency seconds, items) per call, for the soak's windows
    timings: list[tuple[float, float, int]] = field(default_factory=list)


def client(target: str, token: str, keys: list[tuple[str, str]], seconds: float, seed: int,
           max_batch: int = 50) -> ClientResult:
    """Sign for SECONDS; every answer checked. Runs in its own process."""
    import grpc

    from signing_agent_client._proto import signer_pb2, signer_pb2_grpc

    rng = random.Random(seed)
    out = ClientResult()
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(target) as channel:
        stub = signer_pb2_grpc.SignerStub(channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = [plan(rng, keys) for _ in range(rng.randint(1, max_batch))] if rng.random() < 0.3 else None
            started = time.monotonic()
            try:
                if batch is None:
                    one = plan(rng, keys)
                    try:
                        answers = [("OK", stub.Sign(one.request, timeout=30, metadata=metadata), "")]
                    except grpc.RpcError as exc:
                        answers = [(exc.code().name, None, exc.details() or "")]
                    planned = [one]
                else:
                    reply = stub.SignBatch(signer_pb2.SignBatchRequest(requests=[p.request for p in batch]),
                                           timeout=30, metadata=metadata)
                    planned = batch
                    answers = [("OK", r.signed, "") if r.WhichOneof("outcome") == "signed"
                               else (r.refused.code, None, r.refused.message) for r in reply.results]
                    if len(answers) != len(batch):
                        out.errors.append(f"batch of {len(batch)} answered {len(answers)} results")
                        continue
            except grpc.RpcError as exc:
                out.errors.append(f"{'SignBatch' if batch else 'Sign'} call failed: {exc.code().name}")
                continue
            finally:
                out.calls += 1
            ended = time.monotonic()
            out.timings.append((ended, ended - started, len(planned)))
            for p, (code, signed, message) in zip(planned, answers):
                out.items += 1
                problem = check(p, code, signed, message)
                if problem is not None:
                    if len(out.errors) < 20:
                        out.errors.append(problem)
                elif p.secret is None:
                    out.expected_refusals += 1
                else:
                    out.verified += 1
    return out


def _client_entry(args: tuple) -> ClientResult:
    return client(*args)


# -- a run --------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    rss_kib: int
    fds: int


@dataclass
class LoadReport:
    results: list[ClientResult]
    samples: list[Sample]  # during the measured run
    baseline: Sample  # after the warm-up, its clients gone
    final: Sample  # after the run, its clients gone
    sessions_start: int
    sessions_end: int
    started: float
    ended: float
    seconds: float  # the measured run each client was given

    @property
    def errors(self) -> list[str]:
        return [e for r in self.results for e in r.errors]

    @property
    def verified(self) -> int:
        return sum(r.verified for r in self.results)

    @property
    def items(self) -> int:
        return sum(r.items for r in self.results)


def run_load(*, target: str, token: str, keys: list[tuple[str, str]], agent_pid: int, probe_file: Path,
             clients: int, seconds: float, warmup: float = 1.0, seed: int | None = None,
             sample_every: float = 0.25) -> LoadReport:
    """WARMUP seconds of load (not measured), then CLIENTS processes for SECONDS, sampling the agent."""
    seed = secrets.randbits(32) if seed is None else seed
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(clients) as pool:
        pool.map(_client_entry, [(target, token, keys, warmup, seed + 1000 + i) for i in range(clients)])
        time.sleep(0.2)  # the warm-up clients' connections close
        baseline = Sample(time.monotonic(), rss_kib(agent_pid), open_fds(agent_pid))
        sessions_start = open_sessions(agent_pid, probe_file)
        started = time.monotonic()
        pending = pool.map_async(_client_entry, [(target, token, keys, seconds, seed + i) for i in range(clients)])
        samples = []
        while not pending.ready():
            samples.append(Sample(time.monotonic(), rss_kib(agent_pid), open_fds(agent_pid)))
            pending.wait(sample_every)
        results = pending.get(timeout=seconds + 120)
        ended = time.monotonic()
    time.sleep(0.2)
    final = Sample(time.monotonic(), rss_kib(agent_pid), open_fds(agent_pid))
    return LoadReport(results, samples, baseline, final, sessions_start, open_sessions(agent_pid, probe_file),
                      started, ended, seconds)


# -- the soak: its own deployment, through the operator's commands ------------------------------


class SoakDeployment:
    """A throw-away token with two imported Binance keys, a bot and a permissive policy."""

    def __init__(self, base: Path) -> None:
        self.root = base
        self.config = base / "agent.toml"
        self.probe = base / "probe"
        self.keys: list[tuple[str, str]] = []
        self.token = ""
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str, stdin: str = "") -> str:
        proc = subprocess.run([sys.executable, "-m", "agent", "--config", str(self.config), *args], input=stdin,
                              capture_output=True, text=True, cwd=self.root, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"signing-agent {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def create(self) -> "SoakDeployment":
        subprocess.run([sys.executable, "-m", "agent", "token", "init-softhsm", "--dir", str(self.root / "softhsm"),
                        "--label", "soak", "--module", MODULE], check=True, capture_output=True, cwd=ROOT, timeout=120)
        self.config.write_text(
            f'[token]\nmodule = "{MODULE}"\nlabel = "soak"\npin_file = "softhsm/user.pin"\n'
            '[token.env]\nSOFTHSM2_CONF = "softhsm/softhsm2.conf"\n[server]\nsocket = "run/agent.sock"\n')
        (self.root / "policy.toml").write_text(
            '[bots.soak]\nkeys = ["*"]\n\n[keys."*"]\nendpoints = ["* /**"]\ntimestamps = "any"\n')
        token_file = self.root / "soak.token"
        self.cli("bots", "add", "soak", "--token-file", str(token_file))
        self.token = token_file.read_text().strip()
        for i in range(2):
            secret = secrets.token_hex(32)
            self.cli("keys", "import", "--label", f"soak-{i}", "--exchange", "binance", "--api-key", f"soak-id-{i}",
                     stdin=secret + "\n")
            self.keys.append((f"soak-{i}", secret))
        return self

    @property
    def target(self) -> str:
        return f"unix://{self.root / 'run' / 'agent.sock'}"

    def start(self) -> int:
        import grpc

        log = (self.root / "agent.log").open("w")
        self.proc = subprocess.Popen(instrumented_command(self.config), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.root, env=instrumented_env(self.probe))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited {self.proc.returncode}")
            with grpc.insecure_channel(self.target) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return self.proc.pid
                except grpc.FutureTimeoutError:
                    pass
        raise RuntimeError("the agent did not come up")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def window_ratios(report: LoadReport, windows: int) -> tuple[list[float], list[float]]:
    """Per window (equal slices of the run): throughput and p99 latency, each over the first window's.
    Calls still running when a client's time was up count in the last window."""
    span = report.seconds / windows
    items = [0] * windows
    lat: list[list[float]] = [[] for _ in range(windows)]
    for r in report.results:
        for end, latency, n in r.timings:
            w = min(int((end - report.started) / span), windows - 1)
            if w >= 0:
                items[w] += n
                lat[w].append(latency)

    def p99(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")

    base_items, base_p99 = items[0] or 1, p99(lat[0]) or float("nan")
    return [i / base_items for i in items], [p99(x) / base_p99 for x in lat]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured run (default 60)")
    parser.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    parser.add_argument("--windows", type=int, default=6, help="slices of the run compared with the first")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 16 or not 1 <= args.seconds <= 3600:
        parser.error("--clients is 1-16 and --seconds 1-3600 (the soak stays bounded)")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        d = SoakDeployment(Path(tmp)).create()
        pid = d.start()
        try:
            report = run_load(target=d.target, token=d.token, keys=d.keys, agent_pid=pid, probe_file=d.probe,
                              clients=args.clients, seconds=args.seconds, warmup=min(5.0, args.seconds / 4))
        finally:
            code = d.stop()
    first, last = report.baseline, report.final
    throughput, p99 = window_ratios(report, args.windows)
    summary = {
        "clients": args.clients,
        "windows": args.windows,
        "items_verified": report.verified,
        "errors": len(report.errors),
        "throughput_vs_first_window": [round(x, 3) for x in throughput],
        "p99_latency_vs_first_window": [round(x, 3) for x in p99],
        # start: idle after the warm-up; end: idle after the run; max: under load
        "rss_end_over_start": round(last.rss_kib / first.rss_kib, 4),
        "rss_max_over_start": round(max(s.rss_kib for s in report.samples) / first.rss_kib, 4),
        "fds_end_over_start": round(last.fds / first.fds, 4),
        "fds_max_over_start": round(max(s.fds for s in report.samples) / first.fds, 4),
        "pkcs11_sessions_start_end": [report.sessions_start, report.sessions_end],
        "agent_exit": code,
    }
    print(json.dumps(summary, indent=2))
    for e in report.errors[:10]:
        print("error:", e, file=sys.stderr)
    ok = not report.errors and code == 0 and report.sessions_end == report.sessions_start
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
