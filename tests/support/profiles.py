"""Per-exchange adapters for the conformance suite (tests/unit/test_conformance.py): what differs
between exchanges in *how* a vector is checked, never the vectors themselves (tests/vectors/).

A Profile says, for one exchange id of the registry:
  * the key the reference tests sign with: API key id, a fresh secret in the exchange's format,
    passphrase and options;
  * how ccxt is set up and pinned: its extra configuration, and `pin(exchange, now_ms)`, which pins
    ccxt's clock (nonce(), milliseconds(), seconds()...) and randomness (uuid()...) so that plain ccxt
    and the agent sign the same instant;
  * which of ccxt's headers no signature covers (`decorative`, exchange-signing.md 0.7), left out of
    comparisons, and which headers the agent adds that ccxt does not (`own_headers`);
  * how the bridge's instant relates to ccxt's (`bridge_instant`), and extra checks per key type.

Published examples that are not a request with its signed bytes (a payload signed as given, a
signed text built by the exchange's SDK) name a check in CHECKS, implemented here.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import hashlib
import hmac
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import unquote

import ccxt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from agent.exchanges import scheme_for
from agent.schemes import UnsignedRequest
from support.leaks import new_secret, register_secret
from support.reference import asymmetric_credential, fixed_environment, hmac_credential, recording

NOW_MS = 1_700_000_000_123
HEX = "0123456789abcdef"


# -- asymmetric keys, one per type for the session ---------------------------------------------------


@cache
def private_key(key_type: str):
    """A private key of KEY_TYPE, made once per session; its PEM is registered with the leak guard."""
    key = {"ed25519": ed25519.Ed25519PrivateKey.generate,
           "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)}[key_type]()
    register_secret(pem_of(key))
    return key


def pem_of(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def verify(key_type: str, signature: bytes, message: bytes) -> None:
    """Raises InvalidSignature unless SIGNATURE is KEY_TYPE's session key's over MESSAGE (cryptography's check)."""
    public = private_key(key_type).public_key()
    if key_type == "ed25519":
        public.verify(signature, message)
    else:
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


# -- profiles -------------------------------------------------------------------------------------------


def _pin_nonce_ms(ex, now_ms: int) -> None:
    ex.nonce = lambda: now_ms
    ex.milliseconds = lambda: now_ms


def _pin_ms(ex, now_ms: int) -> None:
    ex.milliseconds = lambda: now_ms


def _pin_nonce(ex, now_ms: int) -> None:
    ex.nonce = lambda: now_ms


@dataclass(frozen=True)
class Profile:
    api_key: str
    secret: Callable[[], str]  # a fresh secret as the exchange issues it, registered with the leak guard
    pin: Callable[[object, int], None]  # pins a ccxt exchange's clock (and randomness) to now_ms
    passphrase: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    ccxt_config: Mapping = field(default_factory=dict)  # merged into ccxt's config, placeholder's too
    decorative: Callable[[str], bool] = lambda name: False  # ccxt headers no signature covers
    own_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # key type -> headers ccxt omits
    # The instant the bridge reports for a ccxt call made at now_ms (plain ccxt runs then); None: not
    # compared, plain ccxt runs at now_ms
    bridge_instant: Callable[[int], int] | None = lambda now_ms: now_ms
    after_sign: Callable | None = None  # (key_type, signed) -> None: checks beyond equality with ccxt
    pin_from_signed: Callable | None = None  # (ccxt exchange, signed): pins what ccxt draws at random

    def credential(self, exchange_id: str, key_type: str = "hmac", secret: str | None = None):
        """The credential the agent would hold for this key (a fresh secret unless SECRET is given)."""
        if key_type == "hmac":
            return hmac_credential(exchange_id, self.api_key, secret or self.secret(), self.passphrase,
                                   **self.options)
        return asymmetric_credential(self.api_key, pem_of(private_key(key_type)), self.passphrase)

    def ccxt_secret(self, key_type: str, secret: str) -> str:
        """What ccxt is given as its secret: the HMAC secret, or the private key's PEM."""
        return secret if key_type == "hmac" else pem_of(private_key(key_type))

    def ccxt(self, exchange_id: str, config: Mapping, now_ms: int):
        ex = getattr(ccxt, exchange_id)({**self.ccxt_config, **config})
        self.pin(ex, now_ms)
        return ex

    def expected_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if not self.decorative(k)}


def _binance_signature(key_type: str, signed) -> None:
    """Asymmetric keys: the signature is the last parameter, base64 then percent-encoded, over
    totalParams as sent (verified with the public key, beyond equality with ccxt)."""
    if key_type == "hmac":
        return
    query = signed.path.partition("?")[2]
    carrier = signed.body or query
    unsigned_part, _, encoded = carrier.rpartition("&signature=")
    assert not set(encoded) & set("+/=")  # percent-encoded: no raw '+', '/' or '='
    signature = base64.b64decode(unquote(encoded), validate=True)
    assert len(signature) == {"ed25519": 64, "rsa": 256}[key_type]
    total_params = (query + unsigned_part) if signed.body else unsigned_part
    verify(key_type, signature, total_params.encode("ascii"))


def _bybit_signature(key_type: str, signed) -> None:
    """RSA keys: the signature verifies over timestamp + key + recv window + payload (Bybit's text)."""
    if key_type != "rsa":
        return
    headers = signed.headers_dict()
    payload = signed.path.partition("?")[2] if signed.method == "GET" else signed.body
    message = f"{headers['X-BAPI-TIMESTAMP']}{headers['X-BAPI-API-KEY']}{headers['X-BAPI-RECV-WINDOW']}{payload}"
    signature = base64.b64decode(headers["X-BAPI-SIGN"], validate=True)
    assert len(signature) == 256
    verify("rsa", signature, message.encode())


def _coinbase_pin(ex, now_ms: int) -> None:
    ex.milliseconds = lambda: now_ms
    ex.seconds = lambda: now_ms // 1000
    # The JWT nonce: what the scheme draws first from fixed_environment(now_ms).
    ex.random_bytes = lambda n: fixed_environment(now_ms).random_bytes(16).hex()


def _htx_pin(ex, now_ms: int) -> None:
    ex.milliseconds = lambda: now_ms
    ex.uuid = lambda: HTX_UUID


def _okx_pin(ex, now_ms: int) -> None:
    ex.nonce = lambda: now_ms
    ex.uuid16 = lambda length=16: "0" * length  # the broker clOrdId ccxt invents for trade/order


def _bitstamp_nonce(ex, signed) -> None:
    ex.uuid = lambda: signed.headers_dict()["X-Auth-Nonce"]  # the agent's UUID4, drawn from the environment


def _second(now_ms: int) -> int:
    """Where the signed timestamp is in whole seconds, the bridge reports the start of the second."""
    return now_ms - now_ms % 1000


HTX_UUID = "0c8a1f2e-7b3d-4c5e-9f60-1a2b3c4d5e6f"  # ccxt's client-order-id suffix, pinned
_BINANCE = dict(api_key="AKID-test", secret=lambda: new_secret(64), pin=_pin_nonce_ms,
                ccxt_config={"options": {"recvWindow": None}}, after_sign=_binance_signature)
_KUCOIN = dict(api_key="65a1b2c3d4e5f60718293a4b", secret=lambda: register_secret(str(uuid.uuid4())),
               pin=_pin_nonce, passphrase="my-Kucoin-pass9",
               # KC-API-PARTNER*: signed with ccxt's own partner secret, not the user's
               decorative=lambda name: name.startswith("KC-API-PARTNER"))

PROFILES: dict[str, Profile] = {
    "binance": Profile(**_BINANCE),
    "binanceusdm": Profile(**_BINANCE),
    "binanceus": Profile(**_BINANCE),
    "binancetr": Profile(**_BINANCE),  # no ccxt class: published and refusal cases only
    "bitfinex": Profile(api_key="AKID-bitfinex-test", secret=lambda: new_secret(43), pin=_pin_nonce_ms),
    "bitget": Profile(api_key="bg_0123456789abcdef0123456789abcdef", secret=lambda: new_secret(64, HEX),
                      pin=_pin_nonce, passphrase="BitgetPass2024",
                      decorative=lambda name: name == "X-CHANNEL-API-CODE"),  # ccxt's broker id
    "bitstamp": Profile(api_key="kq7XhV2mB9sT4nW8rY3cZ6pL1dF5gJ0a", secret=lambda: new_secret(32), pin=_pin_ms,
                        pin_from_signed=_bitstamp_nonce),
    "bybit": Profile(api_key="XXXXXXXXXXXXXXXXXX", secret=lambda: new_secret(36), pin=_pin_nonce_ms,
                     decorative=lambda name: name == "Referer",  # ccxt's brokerId on POST
                     own_headers={"rsa": {"X-BAPI-SIGN-TYPE": "2"}},  # Bybit's official RSA sample sends it
                     after_sign=_bybit_signature),
    # ccxt's JWT is in whole seconds: plain ccxt runs at the start of the bridge's second (so do Gate's
    # and HTX's timestamps).
    "coinbase": Profile(api_key="Xq3LmZ8pR2tY7vKw", secret=lambda: new_secret(32), pin=_coinbase_pin,
                        bridge_instant=_second),
    "cryptocom": Profile(api_key="a7Rk2PqX9mZt4WvB8nYc3L", secret=lambda: new_secret(22), pin=_pin_ms),
    "deribit": Profile(api_key="fo7WAPRm4P", secret=lambda: new_secret(32, string.ascii_uppercase + string.digits),
                       pin=_pin_ms),
    # X-Gate-Size-Decimal (futures): covered by no signature; the bridge passes it on (extra headers)
    "gate": Profile(api_key="a4c1" + "0" * 28, secret=lambda: new_secret(64, HEX), pin=_pin_ms,
                    decorative=lambda name: name == "X-Gate-Size-Decimal", bridge_instant=_second),
    "gemini": Profile(api_key="account-AKIDgeminitest00000", secret=lambda: new_secret(28), pin=_pin_ms),
    "htx": Profile(api_key="7d393344-1qdmpe4rty-37def1b5-d10e3",
                   secret=lambda: register_secret("-".join([secrets.token_hex(4), secrets.token_hex(4),
                                                            secrets.token_hex(4), secrets.token_hex(3)[:5]])),
                   # ccxt writes HTX's Timestamp in whole seconds, rounded its own way: not compared
                   pin=_htx_pin, bridge_instant=None),
    "kraken": Profile(api_key="AKID-kraken-test", secret=lambda: register_secret(
        base64.b64encode(secrets.token_bytes(64)).decode()), pin=_pin_nonce_ms),
    "kucoin": Profile(**_KUCOIN),
    "kucoinfutures": Profile(**_KUCOIN),
    "mexc": Profile(api_key="mx0vglAKIDtest0001", secret=lambda: new_secret(32, HEX), pin=_pin_nonce_ms,
                    decorative=lambda name: name == "source"),  # ccxt's broker id
    "okx": Profile(api_key="a8d7c1f2-3b4e-4c5d-9e6f-7a8b9c0d1e2f", secret=lambda: new_secret(32, "0123456789ABCDEF"),
                   pin=_okx_pin, passphrase="Trading-Pass_1!"),
}


# -- published examples that are not a request and its bytes -----------------------------------------


def _gemini_payload(case) -> None:
    """Gemini signs a payload text; the agent issues nonces, so a request cannot carry the doc's nonce
    123456: the example is checked on sign_payload(), the step that signs a payload text as given."""
    from agent.exchanges.gemini.scheme import sign_payload

    key = case["key"]
    payload, signature = sign_payload(hmac_credential("gemini", key["api_key"], key["secret"]), case["payload_json"])
    assert payload == case["payload_b64"]
    if "signature" in case.data:
        assert signature == case["signature"]
    else:
        assert signature != case["not_signature"]  # the doc error the case records


def _ms(utc: str) -> int:
    return calendar.timegm(datetime.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S").timetuple()) * 1000


def _htx_doc_text(case) -> None:
    """HTX's step 6 pre-signed text, for its published key and instant; the signature printed next to
    it is illustrative (the same value appears for other texts across HTX's docs): the HMAC of the
    text is checked instead, and the printed value recorded as not being it."""
    key = case["key"]
    request = UnsignedRequest("GET", case["path"], query=tuple(map(tuple, case["query"])))
    if case.get("key_type") == "ed25519":
        cred, messages = recording(asymmetric_credential(key["api_key"], pem_of(private_key("ed25519"))))
    else:
        cred, messages = recording(hmac_credential("htx", key["api_key"], key["secret"]))
    signed = scheme_for("htx").sign(request, cred, fixed_environment(_ms(case["utc"])))
    assert messages == [case["text"].encode()]
    signature = base64.b64decode(unquote(signed.path.rpartition("&Signature=")[2]))
    if case.get("key_type") == "ed25519":
        assert len(signature) == 64
        verify("ed25519", signature, messages[0])
        return
    expected = hmac.new(key["secret"].encode(), case["text"].encode(), hashlib.sha256).digest()
    assert signature == expected and base64.b64encode(expected).decode() != case["printed_signature"]
    assert signed.path.startswith(case["path"] + "?" + case["text"].split("\n")[3] + "&Signature=")


def _htx_sdk_vector(case) -> None:
    """HTX's Python SDK unit test: its canonical query and signed text, with its key, secret, host and
    timestamp (not ones the scheme produces, so its text functions are checked directly)."""
    from agent.exchanges.htx.scheme import canonical_query, signed_text

    text = signed_text(case["method"], case["host"], case["path"], canonical_query([tuple(p) for p in case["params"]]))
    signature = base64.b64encode(hmac.new(case["secret"].encode(), text, hashlib.sha256).digest()).decode()
    assert signature == case["signature"]


CHECKS: dict[str, Callable] = {
    "gemini-payload": _gemini_payload,
    "htx-doc-text": _htx_doc_text,
    "htx-sdk-vector": _htx_sdk_vector,
}
