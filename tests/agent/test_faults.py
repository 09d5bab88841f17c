"""Faults survived, against the real agent process and real SoftHSM2 tokens (issue 6, item 1).

What test_e2e.py and test_observability.py already show is not repeated here (the token
directory renamed away and back; wrong PIN, missing module, missing token and an open PIN
file at start). Added:

* the token made unreadable for SoftHSM2 under a running agent, then readable again: signing
  answers UNAVAILABLE, health NOT_SERVING, then the agent recovers by itself, and no answer at
  any moment is signed by another key (each checked against Python's hmac with its secret);
* the module finalized inside the running agent, then recovering with no restart;
* a locked user PIN at start (SoftHSM2 never locks: shown; locked for real on openCryptoki);
* SIGTERM with requests in flight: they all finish and verify, new calls are refused, exit 0;
* SIGKILL and restart, three times: nonces never go backwards, the audit chain stays valid,
  every signature handed out was audited, every key stays whole;
* `keys import` killed at random and at chosen points: the whole key or nothing.

As root, chmod 000 does not make a file unreadable (root bypasses permission bits), so the
token is made unreadable by replacing its directory with a regular file of the same name (the
directory moved out of tokens/, which SoftHSM2 scans whole), or its token.object file with a
directory (read fails with EISDIR); the originals are put back by rename.

Three agent bugs were found here and fixed: no recovery when the module initialised while the
token was missing; a finalized module reported as FAILED_PRECONDITION; a killed import leaving a
key without its account (imports now write the signing key last).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from bench.soak import expected_binance, instrumented_command, instrumented_env
from support.deploy import Env, MODULE, TEST_BOT_TOKEN, make_env, run_cli, start_agent
from support.leaks import new_secret, register_secret

pytestmark = pytest.mark.e2e

METADATA = (("authorization", f"Bearer {TEST_BOT_TOKEN}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FINGERPRINT_MESSAGE = b"signing-agent key fingerprint v1"  # agent.custody's: what `keys list` shows


# -- independent computations ----------------------------------------------------------------


def fingerprint(key_bytes: bytes) -> str:
    """The fingerprint `keys list` must show for an HMAC key of KEY_BYTES (custody's published rule)."""
    return hmac.new(key_bytes, FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:32]


def kraken_secret() -> str:
    return register_secret(base64.b64encode(secrets.token_bytes(64)).decode())


def kraken_api_sign(secret: str, path: str, body: str) -> str:
    """Kraken's published rule: base64(HMAC-SHA512(b64decode(secret), path + SHA256(nonce + body)))."""
    nonce = body.split("&")[0].removeprefix("nonce=")
    digest = hashlib.sha256((nonce + body).encode()).digest()
    mac = hmac.new(base64.b64decode(secret), path.encode() + digest, hashlib.sha512).digest()
    return base64.b64encode(mac).decode()


# -- helpers -------------------------------------------------------------------------------------


def import_key(env: Env, label: str, secret: str, exchange: str = "binance", api_key: str = "AK-faults",
               check: bool = True):
    return run_cli(env, "keys", "import", "--label", label, "--exchange", exchange, "--api-key", api_key,
                   stdin=secret + "\n", check=check)


def listed(env: Env) -> dict[str, dict]:
    return {k["label"]: k for k in json.loads(run_cli(env, "keys", "list", "--json", check=True).stdout)}


def health(target: str) -> int | str:
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError as exc:
            return exc.code().name


class NotRecovered(Exception):
    """The agent did not come back by itself ."""


def wait_health(target: str, wanted: int, timeout: float = 5.0, error: type[Exception] = AssertionError
                ) -> list[int | str]:
    """Poll health until WANTED; returns every status seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        seen.append(health(target))
        if seen[-1] == wanted:
            return seen
        if time.monotonic() > deadline:
            raise error(f"health stayed {seen[-5:]} instead of {wanted} for {timeout} s")
        time.sleep(0.05)


def binance_request(label: str, stamp: str) -> signer_pb2.SignRequest:
    return signer_pb2.SignRequest(key=label, method="GET", path="/api/v3/account",
                                  query=[signer_pb2.Param(name="timestamp", value=stamp)])


class Hammer:
    """Threads signing with several Binance keys at once until stopped; every answer is kept and
    every signed one checked against its own key's secret (so a wrong-key answer is caught)."""

    def __init__(self, target: str, keys: dict[str, str], threads: int = 2) -> None:
        self.keys, self.target = keys, target
        self.codes: list[str] = []
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        labels = sorted(self.keys)
        with grpc.insecure_channel(self.target) as channel:
            stub = signer_pb2_grpc.SignerStub(channel)
            n = 0
            while not self._stop.is_set():
                label = labels[(n + i) % len(labels)]
                stamp = str(1_700_000_000_000 + n)
                n += 1
                try:
                    got = stub.Sign(binance_request(label, stamp), timeout=5, metadata=METADATA)
                except grpc.RpcError as exc:
                    self.codes.append(exc.code().name)
                    time.sleep(0.01)
                    continue
                self.codes.append("OK")
                want, _ = expected_binance(self.keys[label], "/api/v3/account", [("timestamp", stamp)], None)
                if got.path != want:
                    self.wrong.append(label)

    def __enter__(self) -> "Hammer":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def count(self, code: str) -> int:
        return self.codes.count(code)


def token_dir(env: Env) -> Path:
    (directory,) = [p for p in (env.root / "softhsm" / "tokens").iterdir() if p.is_dir()]
    return directory


# -- the token made unreadable, and the module finalized ----------------------------------------


def _make_unreadable(env: Env, how: str) -> tuple[Path, Path]:
    """Make the token unreadable for SoftHSM2 (as root: see the module docstring). Returns (moved, original)."""
    if how == "token-dir-is-a-file":
        original = token_dir(env)
        moved = env.root / "softhsm" / (original.name + ".away")  # out of tokens/: SoftHSM2 scans every directory there
        original.rename(moved)
        original.write_bytes(b"not a directory")
    else:  # token.object is a directory
        original = token_dir(env) / "token.object"
        moved = original.with_name("token.object.away")
        original.rename(moved)
        original.mkdir()
    return moved, original


def _restore(moved: Path, original: Path) -> None:
    if original.is_dir():
        original.rmdir()
    else:
        original.unlink()
    moved.rename(original)


# The two ways keep the tokens/ directory in place, so the module still initialises while the
# token is gone (renaming tokens/ away, as test_e2e.py does, makes C_Initialize fail instead).
@pytest.mark.parametrize("how", ["token-dir-is-a-file", "token-object-is-a-directory"])
def test_token_made_unreadable_then_back_unavailable_then_recovered_never_a_wrong_key(tmp_path_factory, how):
    env = make_env(tmp_path_factory, "unreadable")
    keys = {f"uk{i}": new_secret(64) for i in range(3)}
    for label, secret in keys.items():
        import_key(env, label, secret)
    agent = start_agent(env, env.config)
    try:
        with Hammer(agent.target, keys) as hammer:
            wait_health(agent.target, SERVING)
            time.sleep(0.3)
            moved, original = _make_unreadable(env, how)
            try:
                seen = wait_health(agent.target, NOT_SERVING)
                down_from = len(hammer.codes)
                time.sleep(0.4)  # the token stays unreadable for a while: every answer now must be UNAVAILABLE
                down = hammer.codes[down_from:]
            finally:
                _restore(moved, original)
            assert down and set(down) == {"UNAVAILABLE"}, f"while unreadable: {sorted(set(down))}"
            assert hammer.wrong == []
            # By itself: no restart, no request needed. (Measured with the fix: under a second.)
            wait_health(agent.target, SERVING, timeout=2.5, error=NotRecovered)
            recovered_from = len(hammer.codes)
            time.sleep(0.5)
        after = hammer.codes[recovered_from:]
        assert seen[-1] == NOT_SERVING
        assert after and set(after) == {"OK"}, f"after recovery: {sorted(set(after))}"
        assert set(hammer.codes) <= {"OK", "UNAVAILABLE"}, sorted(set(hammer.codes))
        assert hammer.wrong == [], "an answer was signed with another key's secret"
        # Every key still signs with its own secret, through a fresh connection too.
        with grpc.insecure_channel(agent.target) as channel:
            stub = signer_pb2_grpc.SignerStub(channel)
            for label, secret in keys.items():
                got = stub.Sign(binance_request(label, "1"), timeout=5, metadata=METADATA)
                assert got.path == expected_binance(secret, "/api/v3/account", [("timestamp", "1")], None)[0]
    finally:
        assert agent.stop() == 0, agent.log.read_text()[-2000:]
    assert agent.proc.returncode == 0


def test_module_finalized_inside_the_agent_recovers_without_restart(tmp_path_factory):
    """C_Finalize on the agent's module (what a co-resident library calling C_Finalize does): the
    agent notices, reinitialises and logs in again by itself; nothing is signed wrongly meanwhile."""
    env = make_env(tmp_path_factory, "finalize")
    keys = {f"fk{i}": new_secret(64) for i in range(2)}
    for label, secret in keys.items():
        import_key(env, label, secret)
    probe = env.root / "probe"
    log = env.logs / "agent-finalize.log"
    proc = subprocess.Popen(instrumented_command(env.config), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            cwd=env.root, env=instrumented_env(probe))
    target = f"unix://{env.root / 'run' / 'agent.sock'}"
    try:
        wait_health(target, SERVING, timeout=30)
        with Hammer(target, keys) as hammer:
            time.sleep(0.3)
            before = len(hammer.codes)
            proc.send_signal(signal.SIGUSR1)
            marker = Path(str(probe) + ".finalized")
            deadline = time.monotonic() + 5
            while not marker.exists():
                assert time.monotonic() < deadline, "the finalize hook did not run"
                time.sleep(0.01)
            assert marker.read_text() == "0"  # CKR_OK: the module really was finalized
            # The agent notices: a request refused, or health NOT_SERVING (whichever reaches the
            # module first: a request's failure may reinitialise it before the next probe).
            deadline = time.monotonic() + 3
            while set(hammer.codes[before:]) <= {"OK"} and health(target) != NOT_SERVING:
                assert time.monotonic() < deadline, "nothing noticed the finalized module"
                time.sleep(0.02)
            # Back by itself, with no restart: health SERVING and a run of signed answers.
            deadline, mark = time.monotonic() + 5, len(hammer.codes)
            while not (health(target) == SERVING and len(hammer.codes) - mark >= 20):
                assert time.monotonic() < deadline, f"not recovered: {hammer.codes[-5:]}"
                if set(hammer.codes[mark:]) - {"OK"}:
                    mark = len(hammer.codes)
                time.sleep(0.05)
            recovered_from = len(hammer.codes)
            time.sleep(0.5)
        assert hammer.wrong == []
        assert hammer.codes[recovered_from:] and set(hammer.codes[recovered_from:]) == {"OK"}
        # FAILED_PRECONDITION: the bug test_a_request_meeting_a_finalized_module_is_unavailable shows
        # (until the next probe); UNAVAILABLE would be right. Never INTERNAL or UNKNOWN.
        assert set(hammer.codes) <= {"OK", "UNAVAILABLE", "FAILED_PRECONDITION"}, sorted(set(hammer.codes))
        assert proc.poll() is None  # no restart
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]


FINALIZED_KEYRING = r"""
import ctypes, sys
from pathlib import Path
from agent.config import load_config
from agent.custody import Keyring, TokenUnavailable
keyring = Keyring.open(load_config(Path(sys.argv[1])).token)
entry = keyring.lookup(sys.argv[2])
keyring.hmac(entry, b"x", "sha256")
assert ctypes.CDLL(sys.argv[3]).C_Finalize(None) == 0
try:
    keyring.hmac(entry, b"x", "sha256")
except TokenUnavailable:
    print("UNAVAILABLE")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


class NotUnavailable(Exception):
    """A request meeting a finalized module was not reported as UNAVAILABLE ."""


def test_a_request_meeting_a_finalized_module_is_unavailable(tmp_path_factory):
    env = make_env(tmp_path_factory, "finalized")
    import_key(env, "fin", new_secret(64))
    proc = subprocess.run([sys.executable, "-c", FINALIZED_KEYRING, str(env.config), "fin", MODULE],
                          capture_output=True, text=True, timeout=60, cwd=env.root)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.strip() != "UNAVAILABLE":
        raise NotUnavailable(proc.stdout.strip())


# -- PINs ---------------------------------------------------------------------------------------

CKF_USER_PIN_COUNT_LOW = 0x10000
CKF_USER_PIN_LOCKED = 0x40000
# SoftHSM2's token.object: records of (type u64, kind u64, value); the token flags are its vendor
# attribute 0x8000534b, kind 2 (an unsigned long).
_FLAGS_RECORD = (0x8000534B).to_bytes(8, "big") + (2).to_bytes(8, "big")


def token_flags(env: Env) -> int:
    data = (token_dir(env) / "token.object").read_bytes()
    at = data.index(_FLAGS_RECORD) + len(_FLAGS_RECORD)
    return int.from_bytes(data[at:at + 8], "big")


def test_softhsm_never_locks_the_pin(tmp_path_factory):
    """SoftHSM2 2.6 counts no attempts: it raises CKF_USER_PIN_COUNT_LOW and never sets
    CKF_USER_PIN_LOCKED (nor checks it at login), so a locked PIN is shown on openCryptoki below."""
    env = make_env(tmp_path_factory, "pinlock")
    wrong = env.write_config("wrong", pin="not-the-pin-0000")
    for _ in range(6):
        proc = run_cli(env, "keys", "list", config=wrong)
        assert proc.returncode == 3 and "rejected the PIN" in proc.stderr
    assert token_flags(env) & CKF_USER_PIN_COUNT_LOW and not token_flags(env) & CKF_USER_PIN_LOCKED
    assert run_cli(env, "keys", "list").returncode == 0


def test_a_locked_pin_stops_the_start_clearly(tmp_path_factory):
    """openCryptoki's software token locks the user PIN after 3 wrong logins: then the agent refuses
    to start with the right PIN, saying who must act, with exit 3 and no socket."""
    ock = pytest.importorskip("support.ock", reason="tests/support/ock.py (the opencryptoki deployment) is not here")
    with ock.ock_deployment(tmp_path_factory, "ocklock") as d:
        env = d.env
        wrong = env.root / "wrong.pin"
        wrong.write_text("00000000\n")
        wrong.chmod(0o600)
        config = ock.write_ock_config(env.root, "wrong", label=ock.TEST_LABEL, pin_file=wrong)
        said = [run_cli(env, "keys", "list", config=config) for _ in range(4)]
        assert [p.returncode for p in said] == [3, 3, 3, 3]
        assert all("rejected the PIN" in p.stderr for p in said[:3])
        assert "is locked" in said[3].stderr
        proc = run_cli(env, "serve")  # the right PIN, too late
        assert proc.returncode == 3, proc.stderr
        assert "the user PIN of token 'signing-agent-test' is locked; the security officer must reset it" in proc.stderr
        assert "Traceback" not in proc.stderr and not (env.root / "run" / "agent.sock").exists()


# -- SIGTERM with requests in flight --------------------------------------------------------------

# About 0.6 s of work here: inside the agent's 5 s grace even on a machine 3x slower, and still
# running when new calls are refused (within 0.15 s of SIGTERM, measured). A batch's audit lines are
# written as one group when it ends, so the first group says the agent is at work; with more batches
# than signing threads (agent.server.SIGN_THREADS = 8), some are still running or queued then.
BATCHES, BATCH = 12, 300


def test_sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0(tmp_path_factory):
    env = make_env(tmp_path_factory, "sigterm")
    secret = new_secret(64)
    import_key(env, "term", secret)
    agent = start_agent(env, env.config)
    batches = [signer_pb2.SignBatchRequest(requests=[binance_request("term", str(1_700_000_000_000 + b * BATCH + i))
                                                     for i in range(BATCH)]) for b in range(BATCHES)]
    audit = env.root / "state" / "audit.jsonl"
    channel = grpc.insecure_channel(agent.target)
    stub = signer_pb2_grpc.SignerStub(channel)
    try:
        stub.Sign(binance_request("term", "1"), timeout=5, metadata=METADATA)
        lines_before = audit.read_bytes().count(b"\n")
        futures = [stub.SignBatch.future(b, timeout=60, metadata=METADATA) for b in batches]
        # In flight: the agent has finished a first batch (its audit group is written), not all of them.
        deadline = time.monotonic() + 10
        while audit.read_bytes().count(b"\n") < lines_before + BATCH:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert not all(f.done() for f in futures)
        agent.proc.send_signal(signal.SIGTERM)
        # New calls are refused, on the open connection and on new ones, while the batches run on.
        refused, refused_at = [], None
        deadline = time.monotonic() + 5
        while refused_at is None:
            assert time.monotonic() < deadline, "the agent kept accepting new calls after SIGTERM"
            for fresh in (False, True):
                ch = grpc.insecure_channel(agent.target) if fresh else channel
                try:
                    signer_pb2_grpc.SignerStub(ch).Sign(binance_request("term", "2"), timeout=2, metadata=METADATA)
                except grpc.RpcError as exc:
                    refused.append(exc.code().name)
                    refused_at = refused_at or time.monotonic()
                finally:
                    if fresh:
                        ch.close()
            time.sleep(0.01)
        still_running = sum(not f.done() for f in futures)
        results = [f.result() for f in futures]
        code = agent.proc.wait(timeout=30)
    finally:
        channel.close()
        agent.stop(signal.SIGKILL)
    assert still_running > 0, "the batches finished before new calls were refused: nothing was in flight"
    # UNAVAILABLE once the server has stopped accepting; CANCELLED for a call that raced into the
    # shutdown (grpc-core's answer then). Either way: not signed, and retryable elsewhere.
    assert refused and set(refused) <= {"UNAVAILABLE", "CANCELLED"}, refused
    assert code == 0
    for b, reply in enumerate(results):
        assert len(reply.results) == BATCH
        for i, result in enumerate(reply.results):
            assert result.WhichOneof("outcome") == "signed", result.refused.message
            stamp = str(1_700_000_000_000 + b * BATCH + i)
            assert result.signed.path == expected_binance(secret, "/api/v3/account", [("timestamp", stamp)], None)[0]
    log = agent.log.read_text()
    assert '"agent.stopping"' in log and '"agent.stopped"' in log


# -- SIGKILL and restart --------------------------------------------------------------------------


def test_sigkill_and_restart_nonces_forward_audit_valid_keys_whole(tmp_path_factory):
    from agent.audit import verify

    env = make_env(tmp_path_factory, "sigkill")
    kraken = kraken_secret()
    binance = new_secret(64)
    import_key(env, "kr", kraken, exchange="kraken", api_key="KRAKEN-FAULTS")
    import_key(env, "bn", binance)
    signed_ok = 0
    highest = 0
    rng = random.Random()
    for cycle in range(3):
        agent = start_agent(env, env.config)
        nonces: list[int] = []
        bad: list[str] = []
        stop = threading.Event()

        def sign_kraken() -> None:
            with grpc.insecure_channel(agent.target) as ch:
                stub = signer_pb2_grpc.SignerStub(ch)
                req = signer_pb2.SignRequest(key="kr", method="POST", path="/0/private/Balance")
                while not stop.is_set():
                    try:
                        got = stub.Sign(req, timeout=2, metadata=METADATA)
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            bad.append(exc.code().name)
                        return
                    nonces.append(int(got.body.removeprefix("nonce=")))
                    if dict((h.name, h.value) for h in got.headers)["API-Sign"] != kraken_api_sign(kraken, got.path,
                                                                                                 got.body):
                        bad.append("wrong signature")

        threads = [threading.Thread(target=sign_kraken) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 0.5))
        agent.proc.kill()  # SIGKILL, mid-stream
        agent.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert bad == [] and nonces, (bad, len(nonces))
        assert min(nonces) > highest, f"cycle {cycle}: a nonce went backwards across the restart"
        assert sorted(nonces) == sorted(set(nonces))  # no nonce twice
        highest = max(nonces)
        signed_ok += len(nonces)
    agent = start_agent(env, env.config)  # over the stale socket of the killed one
    try:
        with grpc.insecure_channel(agent.target) as ch:
            got = signer_pb2_grpc.SignerStub(ch).Sign(
                signer_pb2.SignRequest(key="kr", method="POST", path="/0/private/Balance"), timeout=5,
                metadata=METADATA)
        assert int(got.body.removeprefix("nonce=")) > highest
        assert dict((h.name, h.value) for h in got.headers)["API-Sign"] == kraken_api_sign(kraken, got.path, got.body)
    finally:
        assert agent.stop() == 0
    signed_ok += 1

    # The audit chain: valid. A line torn by a SIGKILL mid-write would be reported as "truncated"
    # and chained over by the next append; nothing else is allowed (no modified, deleted,
    # inserted, reordered or malformed line). Every signature handed out was audited first.
    report = verify(env.root / "state" / "audit.jsonl")
    assert all(p.kind == "truncated" for p in report.problems), report.problems
    assert len(report.problems) <= 3
    records = [json.loads(line) for line in (env.root / "state" / "audit.jsonl").read_text().splitlines()
               if line.startswith("{") and line.endswith("}")]
    audited = sum(1 for r in records if r.get("event") == "sign" and r.get("key") == "kr" and r.get("status") == "OK")
    assert audited >= signed_ok
    if not report.problems:
        assert run_cli(env, "audit", "verify").returncode == 0

    # Every key whole: listed, registered, and with the fingerprint of its own secret.
    keys = listed(env)
    assert keys["kr"]["registered"] and keys["kr"]["fingerprint"] == fingerprint(base64.b64decode(kraken))
    assert keys["bn"]["registered"] and keys["bn"]["fingerprint"] == fingerprint(binance.encode())
    assert set(keys) == {"kr", "bn"}


# -- an interrupted import --------------------------------------------------------------------------

# Every object on the token, as (class name, label, length of its value): what a half-written
# key would show. (The length only: CKA_VALUE_LEN of secret keys, len(CKA_VALUE) of data objects.)
CENSUS = r"""
import json, os, sys
from pathlib import Path
from agent.config import load_config
from agent.custody import load_module
from pkcs11 import Attribute, ObjectClass, PKCS11Error
config = load_config(Path(sys.argv[1])).token
lib = load_module(config)
def read(obj, attribute, how=lambda v: v):
    try:
        return how(obj[attribute])
    except PKCS11Error as exc:  # named, so that a test failing on it says which
        return type(exc).__name__
def value_len(cls, obj):
    if cls == ObjectClass.SECRET_KEY:
        return read(obj, Attribute.VALUE_LEN)
    if cls == ObjectClass.DATA:
        return read(obj, Attribute.VALUE, len)
    return -1
with lib.get_token(token_label=config.label).open(user_pin=config.read_pin()) as s:
    print(json.dumps([[cls.name, read(obj, Attribute.LABEL), value_len(cls, obj)] for cls in ObjectClass
                      for obj in s.get_objects({Attribute.CLASS: cls})]))
"""


def census(env: Env) -> tuple[dict[str, list[str]], list[tuple[str, int]]]:
    """Objects by label (their classes), and the phantoms: objects without a label.

    A SIGKILL while SoftHSM2 writes an object file leaves that file empty or torn; SoftHSM2 then
    shows it as an object with its defaults (no label, CKA_TOKEN false, empty value) forever."""
    proc = subprocess.run([sys.executable, "-c", CENSUS, str(env.config)], capture_output=True, text=True,
                          timeout=60, cwd=env.root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, list[str]] = {}
    phantoms = []
    for cls, label, length in json.loads(proc.stdout):
        if label == "":
            phantoms.append((cls, length))
        else:
            out.setdefault(label, []).append(cls)
    return {label: sorted(classes) for label, classes in out.items()}, phantoms


WHOLE_HMAC_KEY = ["DATA", "SECRET_KEY"]  # the key and its account


def _object_files(env: Env) -> dict[str, int]:
    sizes = {}
    for p in token_dir(env).glob("*.object"):
        if p.name != "token.object":
            try:
                sizes[p.name] = p.stat().st_size
            except FileNotFoundError:
                pass
    return sizes


def _killed_import(env: Env, label: str, secret: str, *, delay: float | None = None, at_file: int = 0) -> int:
    """Start `keys import` and SIGKILL it DELAY seconds after it logged in, or as soon as the
    AT_FILE-th new object file appears in the token directory (no tracer: polling the directory).
    Returns its exit status.

    Never during the login itself: SoftHSM2 rewrites token.object in place (truncate, then write)
    at every C_Login, and a kill in that window leaves it empty: the whole token is gone for good.
    That is SoftHSM2's, not the import's (see the report of issue 6); the login is over once
    token.object has been rewritten to its full size."""
    token_object = token_dir(env) / "token.object"
    logged_in_before, size = token_object.stat().st_mtime_ns, token_object.stat().st_size
    before = set(_object_files(env))
    proc = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(env.config), "keys", "import", "--label",
                             label, "--exchange", "binance", "--api-key", "AK-import"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=env.root)
    assert proc.stdin is not None
    proc.stdin.write(secret.encode() + b"\n")
    proc.stdin.close()
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        st = token_object.stat()
        if st.st_mtime_ns != logged_in_before and st.st_size == size:
            break
    if delay is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
    else:
        while proc.poll() is None and time.monotonic() < deadline:
            if len(set(_object_files(env)) - before) >= at_file:
                proc.kill()
                break
    return proc.wait(timeout=30)


@pytest.fixture(scope="module")
def interrupted_imports(tmp_path_factory):
    """`keys import` SIGKILLed 10 times a random 0-50 ms after its login (what follows the login
    takes ~40-50 ms here: writing the key, its self-test, the audit line), and 3 times each as its
    first and its second token object file appears. Returns the deployment, the secrets, each
    label's objects after its kill (and the phantoms), and each import's exit status."""
    env = make_env(tmp_path_factory, "interrupt")
    rng = random.Random()
    plans = [(f"rnd{i}", {"delay": rng.uniform(0.0, 0.05)}) for i in range(10)]
    plans += [(f"first{i}", {"at_file": 1}) for i in range(3)]
    plans += [(f"second{i}", {"at_file": 2}) for i in range(3)]
    secrets_ = {label: new_secret(64) for label, _ in plans}
    statuses = {label: _killed_import(env, label, secrets_[label], **how) for label, how in plans}
    objects, phantoms = census(env)
    return env, secrets_, objects, phantoms, statuses


def test_interrupted_import_never_leaves_a_wrong_or_weakened_key(interrupted_imports):
    """What holds today: after a kill at any point, `keys list` works, nothing but the imported
    labels is on the token, torn object files hold no key material, and every key that is listed
    has its own secret's fingerprint and, when registered, signs with that secret."""
    env, secrets_, objects, phantoms, statuses = interrupted_imports
    assert any(s == -signal.SIGKILL for s in statuses.values())
    assert set(objects) <= set(secrets_)  # nothing but the imported labels
    # Torn object files show as empty objects: no key material under weaker attributes.
    assert all(length == 0 for _, length in phantoms), phantoms
    keys = listed(env)
    assert set(keys) <= set(secrets_)
    for label, info in keys.items():
        assert info["fingerprint"] == fingerprint(secrets_[label].encode())
    agent = start_agent(env, env.config)
    try:
        with grpc.insecure_channel(agent.target) as ch:
            stub = signer_pb2_grpc.SignerStub(ch)
            for label, info in keys.items():
                if info["registered"]:
                    got = stub.Sign(binance_request(label, "7"), timeout=5, metadata=METADATA)
                    assert got.path == expected_binance(secrets_[label], "/api/v3/account", [("timestamp", "7")],
                                                        None)[0]
    finally:
        assert agent.stop() == 0


class HalfKey(Exception):
    """An interrupted import left part of a key ."""


def test_interrupted_import_leaves_the_whole_key_or_nothing(interrupted_imports):
    """Each interrupted label is a whole key (listed, registered, its fingerprint), or no key at all
    (not listed), and then a plain re-import of it works, with no clean-up by hand."""
    env, secrets_, objects, phantoms, statuses = interrupted_imports
    keys = listed(env)
    half = {label: info for label, info in keys.items() if not info["registered"]}
    if half:
        raise HalfKey(f"{len(half)} of {len(statuses)} interrupted imports left part of a key: {sorted(half)}")
    for label, secret in secrets_.items():
        if label not in keys:  # the same secret: the other test's checks hold in any order
            proc = import_key(env, label, secret, check=False)
            assert proc.returncode == 0, proc.stderr
    keys = listed(env)
    assert {label: info["registered"] for label, info in keys.items()} == {label: True for label in secrets_}
