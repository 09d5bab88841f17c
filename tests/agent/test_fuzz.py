"""Bad input tried (issue 6, item 3): property-based fuzzing of every RPC of the real agent process
(Sign, SignBatch, the health Check, raw bytes and metadata) and of the CLI, with malformed,
oversized, wrongly typed and unicode-laden input.

For every example: no INTERNAL or UNKNOWN status (and no UNAVAILABLE or DEADLINE_EXCEEDED: the
token is healthy, so those would mean a hang or a crash), every signed answer verifies against
Python's hmac with the key's secret, and afterwards the agent is alive, still signs correctly,
and the token's files are byte for byte what they were (nothing written to the token). The CLI:
exit status 0-4, no Python traceback, no secret echoed.

A request body that is not a valid protobuf message gets INVALID_ARGUMENT: the agent parses
requests itself (grpcio alone would answer INTERNAL "Exception deserializing request!").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from support.deploy import Agent, Env, TEST_BOT_TOKEN, make_env, run_cli, start_agent
from support.leaks import new_secret, register_secret

pytestmark = pytest.mark.e2e

METADATA = (("authorization", f"Bearer {TEST_BOT_TOKEN}"),)
# What a malformed, refused or oversized request may get. Never INTERNAL or UNKNOWN (a bug), nor
# UNAVAILABLE or DEADLINE_EXCEEDED (the token is fine: those would mean a hang or a crash).
ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                      HealthCheck.data_too_large])
BINANCE, KRAKEN = "fz-binance", "fz-kraken"


@dataclass
class Fuzzed:
    env: Env
    agent: Agent
    secrets: dict[str, str]
    token_files: dict[str, str]
    channel: grpc.Channel

    @property
    def stub(self) -> signer_pb2_grpc.SignerStub:
        return signer_pb2_grpc.SignerStub(self.channel)


def token_files(env: Env) -> dict[str, str]:
    """Every file of the token: name -> SHA-256 of its bytes."""
    tokens = env.root / "softhsm" / "tokens"
    return {str(p.relative_to(tokens)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tokens.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fz(tmp_path_factory):
    env = make_env(tmp_path_factory, "fuzz")
    keys = {BINANCE: new_secret(64), KRAKEN: register_secret(base64.b64encode(secrets.token_bytes(64)).decode())}
    run_cli(env, "keys", "import", "--label", BINANCE, "--exchange", "binance", "--api-key", "FZ-B",
            stdin=keys[BINANCE] + "\n", check=True)
    run_cli(env, "keys", "import", "--label", KRAKEN, "--exchange", "kraken", "--api-key", "FZ-K",
            stdin=keys[KRAKEN] + "\n", check=True)
    agent = start_agent(env, env.config)
    channel = grpc.insecure_channel(agent.target, options=[("grpc.max_send_message_length", 4 << 20)])
    state = Fuzzed(env, agent, keys, token_files(env), channel)
    yield state
    channel.close()
    assert agent.stop() == 0, agent.log.read_text()[-2000:]
    assert '"sign.bug"' not in agent.log.read_text()  # no request reached the agent's own INTERNAL path


def verify_signed(fz: Fuzzed, label: str, signed) -> None:
    """A signed answer must verify under the key's own secret (independent computation)."""
    if label == BINANCE:
        # Binance: HMAC-SHA256 hex over query text + body text, `signature=` appended last to one of them.
        query = signed.path.partition("?")[2]
        if "signature=" in signed.body:
            body, _, sig = signed.body.rpartition("signature=")
            payload = query + body.removesuffix("&")
        else:
            query, _, sig = query.rpartition("signature=")
            payload = query.removesuffix("&")
        want = hmac.new(fz.secrets[BINANCE].encode(), payload.encode(), hashlib.sha256).hexdigest()
        assert hmac.compare_digest(sig, want), "a Binance answer does not verify under its key"
    elif label == KRAKEN:
        nonce = signed.body.split("&")[0].removeprefix("nonce=")
        if signed.body.startswith("{"):
            nonce = json.loads(signed.body)["nonce"]
        digest = hashlib.sha256((nonce + signed.body).encode()).digest()
        want = base64.b64encode(hmac.new(base64.b64decode(fz.secrets[KRAKEN]), signed.path.encode() + digest,
                                         hashlib.sha512).digest()).decode()
        got = {h.name: h.value for h in signed.headers}["API-Sign"]
        assert hmac.compare_digest(got, want), "a Kraken answer does not verify under its key"
    else:
        raise AssertionError(f"signed for a key that does not exist: {label[:80]!r}")


def still_serving(fz: Fuzzed) -> None:
    """Alive, signing right, and nothing written to the token."""
    assert fz.agent.proc.poll() is None, "the agent died"
    stamp = str(1_700_000_000_000)
    got = fz.stub.Sign(signer_pb2.SignRequest(key=BINANCE, method="GET", path="/api/v3/account",
                                              query=[signer_pb2.Param(name="timestamp", value=stamp)]),
                       timeout=10, metadata=METADATA)
    want = hmac.new(fz.secrets[BINANCE].encode(), f"timestamp={stamp}".encode(), hashlib.sha256).hexdigest()
    assert got.path == f"/api/v3/account?timestamp={stamp}&signature={want}"
    assert token_files(fz.env) == fz.token_files, "the token's files changed"


# -- strategies -----------------------------------------------------------------------------------

CHARS = st.characters(exclude_categories=("Cs",))  # protobuf strings are valid Unicode: no lone surrogates
TEXT = st.text(CHARS, max_size=40)
NOW_MS = int(time.time() * 1000)


def big() -> st.SearchStrategy[str]:
    """Oversized text, up to past gRPC's 1 MiB message limit, in 1-4 byte characters."""
    return st.tuples(st.sampled_from([3000, 9000, 70_000, 300_000, 1_100_000]),
                     st.sampled_from(["a", "é", "中", "😀", "\x00", "%"])).map(
        lambda t: t[1] * (t[0] // len(t[1].encode())))


labels = st.one_of(st.sampled_from([BINANCE, KRAKEN, "absent-key", "", "a" * 65, "../etc/passwd", BINANCE + "\n",
                                    BINANCE.upper(), " " + BINANCE]), TEXT)
methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "PATCH", "", "GET "]), TEXT)
paths = st.one_of(
    st.sampled_from(["/api/v3/order", "/api/v3/account", "/api/v3/openOrders", "/0/private/AddOrder",
                     "/0/private/Balance", "/sapi/v1/capital/withdraw/apply", "/", "", "/api/v3/order?x=1",
                     "/api/v3/../../order", "/API/V3/ORDER", "/api/v3/order/"]),
    TEXT, TEXT.map(lambda t: "/" + t))
names = st.one_of(st.sampled_from(["symbol", "side", "type", "quantity", "price", "timestamp", "signature", "nonce",
                                   "recvWindow", "Symbol", "SYMBOL", "", "a=b", "a&b", "pair", "volume"]), TEXT)
values = st.one_of(st.sampled_from(["BTCUSDT", "1", "0.001", "-1", "1e400", "NaN", "", "LIMIT", "BUY", "1700000000000",
                                    "999999999999999999999999"]), TEXT)
params = st.lists(st.tuples(names, values), max_size=12)
big_params = st.lists(st.tuples(names, st.one_of(values, big())), max_size=12)
raw_texts = st.one_of(TEXT, st.sampled_from(['{"a":1}', '{"nonce":"1"}', "a=1&a=2", "{", "[1]", "a=%ZZ", "=&="]))


def bodies(big_ok: bool) -> st.SearchStrategy:
    return st.one_of(
        st.none(),
        (big_params if big_ok else params).map(lambda p: ("fields", p)),
        (st.one_of(raw_texts, big()) if big_ok else raw_texts).map(lambda t: ("raw", t)),
    )


timestamps = st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1), st.integers(NOW_MS - 10**9, NOW_MS + 10**6))


UNICODE_VALUES = st.text(st.sampled_from("aZ09 .-_~&=%+/?#é中😀\u00a0\u200b\u202e\ufeff\U0001f680\x01\x7f"),
                         max_size=20)
PLAIN_NAMES = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_[]"), min_size=1, max_size=12)


@st.composite
def plausible_requests(draw) -> signer_pb2.SignRequest:
    """Requests close to what a bot sends, so that most are signed (and verified) or refused by policy."""
    pairs = draw(st.lists(st.tuples(st.one_of(PLAIN_NAMES, names), st.one_of(UNICODE_VALUES, values)), max_size=8,
                          unique_by=lambda p: p[0].lower()))
    if draw(st.booleans()):
        key, method = BINANCE, draw(st.sampled_from(["GET", "POST", "DELETE", "PUT"]))
        path = draw(st.sampled_from(["/api/v3/order", "/api/v3/account", "/api/v3/openOrders", "/fapi/v1/order",
                                     "/api/v3/myTrades"]))
    else:
        key, method = KRAKEN, "POST"
        path = "/0/private/" + draw(st.sampled_from(["Balance", "AddOrder", "CancelOrder", "OpenOrders", "Withdraw"]))
    msg = signer_pb2.SignRequest(key=key, method=method, path=path, timestamp_ms=draw(
        st.one_of(st.just(0), st.integers(NOW_MS - 4000, NOW_MS + 4000))))
    where = "query" if method == "GET" else draw(st.sampled_from(["query", "fields", "raw"]))
    if where == "query":
        msg.query.extend(signer_pb2.Param(name=n, value=v) for n, v in pairs)
    elif where == "fields":
        msg.fields.items.extend(signer_pb2.Param(name=n, value=v) for n, v in pairs)
        msg.fields.SetInParent()
    else:
        msg.raw = draw(st.one_of(raw_texts, st.just("&".join(f"{n}={v}" for n, v in pairs)),
                                 st.just(json.dumps(dict(pairs), ensure_ascii=False))))
    return msg


@st.composite
def wild_requests(draw, big_ok: bool = True) -> signer_pb2.SignRequest:
    """Any SignRequest; with BIG_OK, some fields are oversized (up to past the 1 MiB message limit)."""
    msg = signer_pb2.SignRequest(
        key=draw(labels), method=draw(methods), path=draw(st.one_of(paths, big()) if big_ok else paths),
        query=[signer_pb2.Param(name=n, value=v) for n, v in draw(big_params if big_ok else params)],
        timestamp_ms=draw(timestamps))
    body = draw(bodies(big_ok))
    if body is not None and body[0] == "fields":
        msg.fields.items.extend(signer_pb2.Param(name=n, value=v) for n, v in body[1])
        if not body[1]:
            msg.fields.SetInParent()  # the oneof set, with no items
    elif body is not None:
        msg.raw = body[1]
    return msg


def sign_requests(big_ok: bool = True) -> st.SearchStrategy[signer_pb2.SignRequest]:
    return st.one_of(plausible_requests(), plausible_requests(), wild_requests(big_ok=big_ok))  # 2:1


def code_of(call) -> tuple[str, object]:
    try:
        return "OK", call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


# -- the RPCs ---------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=120)
@given(request=sign_requests())
def test_sign_never_internal_and_every_signature_verifies(fz, request):
    code, reply = code_of(lambda: fz.stub.Sign(request, timeout=10, metadata=METADATA))
    event(code)  # --hypothesis-show-statistics: how many were signed (and so verified)
    assert code in ALLOWED, f"{code}: {str(reply)[:300]}"
    if code == "OK":
        verify_signed(fz, request.key, reply)


@pytest.fixture(scope="module", autouse=True)
def _check_after_module(fz):
    yield
    still_serving(fz)


def test_sign_fuzz_left_the_agent_serving_and_the_token_untouched(fz):
    still_serving(fz)


@settings(FUZZ, max_examples=15)
@given(count=st.one_of(st.sampled_from([0, 1, 1000, 1001]), st.integers(0, 1100)),
       items=st.lists(sign_requests(big_ok=False), min_size=1, max_size=4))
def test_sign_batch_of_any_size_answers_item_by_item(fz, count, items):
    batch = signer_pb2.SignBatchRequest(requests=[items[i % len(items)] for i in range(count)])
    code, reply = code_of(lambda: fz.stub.SignBatch(batch, timeout=60, metadata=METADATA))
    event(f"{code}, {'0' if not count else '1-999' if count < 1000 else '1000' if count == 1000 else '>1000'} items")
    if not 1 <= count <= 1000:
        assert code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"), code
        return
    assert code in ("OK", "RESOURCE_EXHAUSTED"), f"{code}: {str(reply)[:300]}"  # over 1 MiB: refused whole
    if code == "OK":
        assert len(reply.results) == count
        for request, result in zip(batch.requests, reply.results):
            if result.WhichOneof("outcome") == "signed":
                verify_signed(fz, request.key, result.signed)
            else:
                assert result.refused.code in ALLOWED - {"OK"}, result.refused.code
    still_serving(fz)


def test_sign_batch_over_one_mebibyte_is_refused_whole(fz):
    item = signer_pb2.SignRequest(key=BINANCE, method="POST", path="/api/v3/order", raw="é" * 600)
    batch = signer_pb2.SignBatchRequest(requests=[item] * 1000)
    assert batch.ByteSize() > 1 << 20
    code, _ = code_of(lambda: fz.stub.SignBatch(batch, timeout=30, metadata=METADATA))
    assert code == "RESOURCE_EXHAUSTED"
    still_serving(fz)


@settings(FUZZ, max_examples=40)
@given(service=st.one_of(TEXT, big(), st.sampled_from(["", "signing_agent.v1.Signer", "grpc.health.v1.Health"])))
def test_health_check_of_any_service_name(fz, service):
    code, reply = code_of(lambda: health_pb2_grpc.HealthStub(fz.channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10))
    if service in ("", "signing_agent.v1.Signer"):
        assert code == "OK" and reply.status == health_pb2.HealthCheckResponse.SERVING
    else:
        assert code in ("NOT_FOUND", "RESOURCE_EXHAUSTED"), code


PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
auth_values = st.one_of(
    PRINTABLE,
    st.sampled_from(["", "Bearer", "Bearer ", "bearer", "Basic dXNlcjpwYXNz", f"Bearer {TEST_BOT_TOKEN}",
                     f"bearer {TEST_BOT_TOKEN}", f"BEARER  {TEST_BOT_TOKEN}  ", f"Bearer {TEST_BOT_TOKEN}x",
                     f"Bearer {TEST_BOT_TOKEN[:-1]}", f"Bearer {TEST_BOT_TOKEN} {TEST_BOT_TOKEN}",
                     f"Token {TEST_BOT_TOKEN}", TEST_BOT_TOKEN, "Bearer " + "x" * 9000]),
)
metadata_lists = st.lists(st.tuples(st.sampled_from(["authorization", "x-api-key", "authorization-bin", "cookie"]),
                                    auth_values), max_size=3)


@settings(FUZZ, max_examples=60)
@given(metadata=metadata_lists)
def test_odd_credentials_are_unauthenticated_never_internal(fz, metadata):
    md = tuple((k, v.encode() if k.endswith("-bin") else v) for k, v in metadata)
    request = signer_pb2.SignRequest(key=BINANCE, method="GET", path="/api/v3/account")
    code, reply = code_of(lambda: fz.stub.Sign(request, timeout=10, metadata=md))
    # The first `authorization` value decides: "Bearer" (any case), then the token, spaces trimmed.
    first = next((v for k, v in metadata if k == "authorization"), None)
    scheme, _, token = (first or "").partition(" ")
    if first is not None and scheme.lower() == "bearer" and token.strip() == TEST_BOT_TOKEN:
        assert code == "OK", code
        verify_signed(fz, BINANCE, reply)
    else:
        assert code in ("UNAUTHENTICATED", "RESOURCE_EXHAUSTED"), f"{code}: {str(reply)[:200]}"


def _field(number: int, wire: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out
    return varint((number << 3) | wire) + payload


protobuf_like = st.lists(
    st.tuples(st.integers(1, 20), st.integers(0, 7), st.binary(max_size=40)).map(lambda t: _field(*t)),
    max_size=8).map(b"".join)
RAW_METHODS = ["/signing_agent.v1.Signer/Sign", "/signing_agent.v1.Signer/SignBatch", "/grpc.health.v1.Health/Check"]


@settings(FUZZ, max_examples=120)
@given(method=st.sampled_from(RAW_METHODS), data=st.one_of(st.binary(max_size=2048), protobuf_like))
def test_raw_bytes_never_reach_the_agent_as_a_crash(fz, method, data):
    """Random bytes as the message: decodable ones are answered like any request; undecodable ones
    get INVALID_ARGUMENT. Never INTERNAL or UNKNOWN."""
    call = fz.channel.unary_unary(method)
    code, reply = code_of(lambda: call(data, timeout=10, metadata=METADATA))
    assert code in ALLOWED, f"{code}: {str(reply)[:200]}"


class Internal(Exception):
    """INTERNAL for undecodable bytes."""


@pytest.mark.parametrize("method", RAW_METHODS)
def test_undecodable_messages_are_not_internal(fz, method):
    for data in (b"\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\x12\x05GET"):  # truncated; invalid UTF-8; short field
        code, details = code_of(lambda: fz.channel.unary_unary(method)(data, timeout=10, metadata=METADATA))
        if code == "INTERNAL":
            raise Internal(details)
        assert code == "INVALID_ARGUMENT", code


# -- the CLI --------------------------------------------------------------------------------------

ARG = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
CLI_FUZZ = settings(FUZZ, max_examples=8)


def cli(env: Env, *args: str, stdin: bytes = b"", config: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "agent", "--config", str(config or env.config), *args], input=stdin,
                          capture_output=True, timeout=60, cwd=env.root)
    stamp = time.monotonic_ns()
    (env.logs / f"fuzz-cli-{stamp}.out").write_bytes(proc.stdout)  # scanned by the leak guard
    (env.logs / f"fuzz-cli-{stamp}.err").write_bytes(proc.stderr)
    assert proc.returncode in (0, 1, 2, 3, 4), (args, proc.returncode, proc.stderr[-500:])
    assert b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> Env:
    return make_env(tmp_path_factory, "fuzzcli")


@settings(CLI_FUZZ, max_examples=10)
@given(label=st.one_of(ARG, st.sampled_from(["ok-label", "-x", "a" * 65, "é"])),
       exchange=st.one_of(ARG, st.sampled_from(["binance", "kraken", "kucoin", "okx", "coinbase", "nosuch"])),
       api_key=st.one_of(ARG, st.just("AK-fuzz")),
       key_type=st.sampled_from([None, "hmac", "ed25519", "rsa", "ec-p256", "dsa"]),
       options=st.lists(ARG, max_size=2),
       secret=st.one_of(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=80), ARG),
       extra_lines=st.lists(ARG, max_size=2))
def test_cli_keys_import_fuzzed(cli_env, label, exchange, api_key, key_type, options, secret, extra_lines):
    # A random tag starts the secret, so that "not echoed" means something whatever hypothesis drew
    # (and the leak guard looks for the tag in every output of the session).
    tag = register_secret("Zq" + secrets.token_hex(8))
    tagged = tag + secret
    args = ["keys", "import", "--label", label, "--exchange", exchange, "--api-key", api_key]
    args += ["--type", key_type] if key_type else []
    for option in options:
        args += ["--option", option]
    stdin = "\n".join([tagged, *extra_lines]).encode()
    proc = cli(cli_env, *args, stdin=stdin)
    assert tag.encode() not in proc.stdout + proc.stderr
    if proc.returncode == 0:  # it was a valid key: it is whole, then it goes
        keys = json.loads(cli(cli_env, "keys", "list", "--json").stdout)
        assert [k["registered"] for k in keys if k["label"] == label] == [True]
        assert cli(cli_env, "keys", "revoke", "--label", label).returncode == 0


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ARG,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ARG, inner, max_size=3),
                           max_leaves=8)
sign_stdin = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries({"method": st.one_of(st.sampled_from(["GET", "POST"]), ARG),
                           "path": st.one_of(st.sampled_from(["/api/v3/account", "/api/v3/order"]), ARG)},
                          optional={"query": json_values, "body": json_values, "extra": json_values}).map(
        lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@CLI_FUZZ
@given(key=st.one_of(st.sampled_from([BINANCE, KRAKEN, "absent"]), ARG), stdin=sign_stdin,
       timeout=st.sampled_from(["5", "0", "-1", "nan", "1e9", "x"]))
def test_cli_sign_fuzzed(fz, key, stdin, timeout):
    proc = cli(fz.env, "sign", "--key", key, "--timeout", timeout, stdin=stdin)
    if proc.returncode == 0:
        signed = json.loads(proc.stdout)
        assert key in (BINANCE, KRAKEN) and signed["path"].startswith("/")


@CLI_FUZZ
@given(text=st.one_of(ARG, st.text(max_size=300).filter(lambda t: "\x00" not in t),
                      st.sampled_from(['[bots.b]\nkeys = ["*"]\n', "[keys.\"*\"]\nendpoints = 1\n", "[[[", "= =",
                                       '[keys."*"]\nendpoints = ["* /**"]\nrate_per_second = -1\n'])))
def test_cli_policy_check_fuzzed(cli_env, text, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(text, errors="surrogatepass")
    cli(cli_env, "policy", "check", "--file", str(path))


@CLI_FUZZ
@given(data=st.one_of(st.binary(max_size=400),
                      st.just(b'{"seq":1,"ts":"x","event":"e","prev":"' + b"0" * 64 + b'"}\n')),
       head=st.one_of(st.none(), ARG, st.just("0" * 64)))
def test_cli_audit_verify_fuzzed(cli_env, data, head, tmp_path_factory):
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    path.write_bytes(data)
    cli(cli_env, "audit", "verify", "--file", str(path), *(["--head", head] if head is not None else []))
