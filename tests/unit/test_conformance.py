"""Every exchange of the registry against references not written by us, from its vector file.

One suite, parametrized over agent.exchanges.EXCHANGES and tests/vectors/<exchange>.json (read by
support.vectors; how each exchange is set up for the comparison is in support.profiles):

  * every registry entry has a vector file, and every vector file names a registry entry;
  * published examples: the exchange's own published bytes (each case names its source);
  * ccxt: the signed request equals ccxt 4.5.90's own sign() with the same secret and instant, byte
    for byte, for every key type listed (asymmetric ones also verified with the public key);
  * the ccxt bridge's round trip (placeholder ccxt -> unsign -> scheme) gives plain ccxt's request,
    and the bridge leaves public calls alone;
  * refusals: each request is refused with a reason (RequestInvalid matching the case), and a
    refusal spends no nonce (the key's high-water mark is untouched);
  * the signed bytes read back, as the exchange parses them, as the parameters the policy checked
    (support.signed_bytes, the property tests/adversarial/test_signed_bytes.py generates requests for);
  * no signed request carries the secret.

The schemes are pure: here the MAC is Python's hmac and the signatures `cryptography`'s, with the
secret in memory, as ccxt does (support.reference). The token path is the same schemes with the
token's MAC (tests/token, tests/agent).
"""

from __future__ import annotations

import copy

import pytest

from agent.delivery import relabelled_problem
from agent.exchanges import EXCHANGES, scheme_for
from agent.schemes import RequestInvalid
from signing_agent_client.ccxt_bridge import bridge_module
from support import vectors
from support.profiles import CHECKS, NOW_MS, PROFILES
from support.reference import fixed_environment, hmac_credential
from support.signed_bytes import assert_signed_bytes_read_as_checked

CCXT_IDS = sorted(e for e in EXCHANGES if EXCHANGES[e].ccxt_id)


# -- the registry and its vectors ---------------------------------------------------------------


@pytest.mark.parametrize("exchange_id", sorted(EXCHANGES))
def test_every_registered_exchange_has_vectors_and_a_profile(exchange_id):
    assert exchange_id in vectors.files(), f"{exchange_id}: write tests/vectors/{exchange_id}.json (support/vectors.py)"
    assert exchange_id in PROFILES, f"{exchange_id}: describe how it is checked in tests/support/profiles.py"
    data = vectors.load(exchange_id)
    assert data["exchange"] == exchange_id
    # Something not written by us: a published example, or (where ccxt has the exchange) ccxt.
    assert data.get("published") or (EXCHANGES[exchange_id].ccxt_id and data.get("ccxt")), exchange_id
    assert set(data) <= {"exchange", *vectors.KINDS}, f"{exchange_id}: unknown keys {set(data) - {'exchange', *vectors.KINDS}}"


def test_every_vector_file_names_a_registered_exchange():
    assert set(vectors.files()) <= set(EXCHANGES), set(vectors.files()) - set(EXCHANGES)


@pytest.mark.parametrize("case", vectors.params("published"))
def test_published_examples_name_their_source(case):
    assert case.get("source"), f"{case.id}: a published example needs its source"


# -- published examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", vectors.params("published"))
def test_equals_the_published_example(case):
    if "check" in case.data:
        CHECKS[case["check"]](case)
        return
    if "mac" in case.data:
        mac = case["mac"]
        value = hmac_credential(case.exchange, mac["key"]["api_key"], mac["key"]["secret"]).mac(
            mac["message"].encode(), mac["hash"])
        assert value.hex() == mac["hex"]
        assert value.hex() != mac.get("not_hex")
        return
    key = case["key"]
    credential = hmac_credential(case.exchange, key["api_key"], key["secret"], key.get("passphrase"))
    signed = scheme_for(case.exchange).sign(case.request, credential, fixed_environment(case["now_ms"]))
    expect = case["expect"]
    for name, actual in (("method", signed.method), ("path", signed.path), ("body", signed.body)):
        if name in expect:
            assert actual == expect[name], name
    if "headers" in expect:
        assert signed.headers_dict() == expect["headers"]
    for header, value in expect.get("headers_include", {}).items():
        assert signed.headers_dict()[header] == value
    assert signed.path.endswith(expect.get("path_endswith", ""))
    assert signed.body.endswith(expect.get("body_endswith", ""))
    if "absent" in expect:  # a value the documentation prints that is not the signature (a doc error)
        assert expect["absent"] not in repr(signed)


# -- ccxt's own sign() -------------------------------------------------------------------------------


def _ccxt_params(case):
    call = case["ccxt"]
    return call["path"], list(call["api"]), call["method"], copy.deepcopy(call["params"])


def _key_type_params(where):
    return [pytest.param(case, key_type, id=f"{case.id}-{key_type}")
            for case in vectors.cases("ccxt") for key_type in where(case)]


def _assert_equals_ccxt(profile, key_type, signed, expected, base_url=None, extra_headers=()):
    url = expected["url"].removesuffix("?")  # ccxt writes url + '?' + '' for no parameters: the same request
    if base_url is None:  # the host is ccxt's; the agent signs (and returns) the path
        base_url = url[: url.index("/", len("https://"))]
    assert base_url + signed.path == url
    assert signed.method == expected["method"]
    assert signed.body == (expected["body"] or "")
    ours = {**dict(extra_headers), **signed.headers_dict()}
    for name, value in profile.own_headers.get(key_type, {}).items():
        assert ours.pop(name) == value
    for name, value in extra_headers:  # ccxt's own headers the bridge passes on, unchanged
        assert expected["headers"][name] == value
    assert profile.expected_headers(ours) == profile.expected_headers(expected["headers"])


@pytest.mark.parametrize("case,key_type", _key_type_params(lambda c: c["key_types"] if c.get("sign", True) else ()))
def test_equals_ccxt_sign(case, key_type):
    profile = PROFILES[case.exchange]
    secret = profile.secret()
    credential = profile.credential(case.exchange, key_type, secret)
    signed = scheme_for(case.exchange).sign(case.request, credential, fixed_environment(NOW_MS))
    plain = profile.ccxt(case.exchange, {"apiKey": profile.api_key, "secret": profile.ccxt_secret(key_type, secret),
                                         "password": profile.passphrase}, NOW_MS)
    if profile.pin_from_signed:
        profile.pin_from_signed(plain, signed)
    path, api, method, params = _ccxt_params(case)
    _assert_equals_ccxt(profile, key_type, signed, plain.sign(path, api, method, params))
    if profile.after_sign:
        profile.after_sign(key_type, signed)
    assert secret not in repr(signed)


@pytest.mark.parametrize("case", vectors.params("ccxt", where=lambda c: c.get("nonce")))
def test_nonce_comes_from_the_key_with_the_clock_in_ms_as_floor(case):
    """Where the agent issues the nonce (Kraken, Bitfinex, Gemini): the key's next one above its
    high-water mark, asked with the clock in milliseconds as floor (as ccxt: never microseconds), and
    it is the nonce the signature covers (ccxt with that nonce agrees)."""
    profile = PROFILES[case.exchange]
    secret = profile.secret()
    key = profile.credential(case.exchange, "hmac", secret)
    key.last_nonce = NOW_MS + 5
    signed = [scheme_for(case.exchange).sign(case.request, key, fixed_environment(NOW_MS)) for _ in range(2)]
    assert key.floors == [NOW_MS, NOW_MS]
    path, api, method, params = _ccxt_params(case)
    for one, nonce in zip(signed, (NOW_MS + 6, NOW_MS + 7)):
        plain = profile.ccxt(case.exchange, {"apiKey": profile.api_key, "secret": secret}, nonce)
        _assert_equals_ccxt(profile, "hmac", one, plain.sign(path, api, method, copy.deepcopy(params)))


# -- the ccxt bridge: ccxt without the secret, then the scheme ------------------------------------------


@pytest.mark.parametrize("case,key_type,now_ms", [
    pytest.param(case, key_type, now_ms, id=f"{case.id}-{key_type}" + (f"-{now_ms}" if now_ms != NOW_MS else ""))
    for case in vectors.cases("ccxt") for key_type in case.get("bridge", ()) for now_ms in case.get("instants", [NOW_MS])
])
def test_bridge_round_trip_equals_plain_ccxt(case, key_type, now_ms):
    profile = PROFILES[case.exchange]
    bridge = bridge_module(case.exchange)
    path, api, method, params = _ccxt_params(case)
    placeholder = profile.ccxt(case.exchange, dict(bridge.PLACEHOLDER), now_ms)
    built = placeholder.sign(path, api, method, copy.deepcopy(params))
    unsigned = bridge.unsign(placeholder, built, api)
    assert unsigned is not None and "agent-held" not in repr(unsigned.request)
    instant = profile.bridge_instant(now_ms) if profile.bridge_instant else now_ms
    if unsigned.timestamp_ms is not None and profile.bridge_instant:
        assert unsigned.timestamp_ms == instant
    secret = profile.secret()
    # No instant from the bot (the request carries its own timestamp): the agent's clock, a bit later.
    when = unsigned.timestamp_ms if unsigned.timestamp_ms is not None else now_ms + 999
    signed = scheme_for(case.exchange).sign(unsigned.request, profile.credential(case.exchange, key_type, secret),
                                            fixed_environment(when))
    plain = profile.ccxt(case.exchange, {"apiKey": profile.api_key, "secret": profile.ccxt_secret(key_type, secret),
                                         "password": profile.passphrase}, instant)
    if profile.pin_from_signed:
        profile.pin_from_signed(plain, signed)
    _assert_equals_ccxt(profile, key_type, signed, plain.sign(path, api, method, params),
                        base_url=unsigned.base_url, extra_headers=tuple(unsigned.extra_headers))


@pytest.mark.parametrize("case", vectors.params("public"))
def test_bridge_leaves_public_calls_alone(case):
    bridge = bridge_module(case.exchange)
    placeholder = PROFILES[case.exchange].ccxt(case.exchange, dict(bridge.PLACEHOLDER), NOW_MS)
    built = placeholder.sign(case["path"], list(case["api"]), case["method"], dict(case["params"]))
    assert bridge.unsign(placeholder, built, list(case["api"])) is None


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", vectors.params("refusals"))
def test_refused_with_a_reason_and_no_nonce_spent(case):
    credential = PROFILES[case.exchange].credential(case.exchange)
    with pytest.raises(RequestInvalid, match=case["match"]):
        scheme_for(case.exchange).sign(case.request, credential, fixed_environment(case.get("now_ms", NOW_MS)))
    # A refused request must not move the key's nonce: the next signed one would jump, and on
    # exchanges that want consecutive nonces per key, a bot could burn them.
    assert credential.floors == [] and credential.last_nonce == 0


# -- what is signed reads back as what was checked --------------------------------------------------------


@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case["known_gap"])]
                 if case.get("known_gap") else [])
    for case in vectors.cases("ccxt") if case.get("sign", True)])
def test_signed_bytes_of_each_case_read_back_as_checked(case):
    # A case with a `known_gap` is a gap found and not closed yet: expected to fail, and to fail the
    # suite (strict) once closed, so that the vector file is updated. A request whose bytes verify as
    # another (Bitstamp GETs) is Send only: the agent never hands its signature to a bot.
    expected = "send only" if relabelled_problem(case.exchange, case.request.method, "key") else "signed"
    assert assert_signed_bytes_read_as_checked(case.exchange, case.request) == expected


@pytest.mark.parametrize("case", vectors.params("refusals"))
def test_refused_requests_are_refused_before_the_exchange_could_read_them(case):
    # The property's other side: what the scheme refuses is never signed bytes a reader must parse.
    assert assert_signed_bytes_read_as_checked(case.exchange, case.request) == "refused"


@pytest.mark.parametrize("exchange_id", sorted(EXCHANGES))
def test_signed_request_never_carries_the_secret(exchange_id):
    profile = PROFILES[exchange_id]
    signable = [c.request for c in vectors.cases("ccxt", [exchange_id]) if c.get("sign", True)] or [
        c.request for c in vectors.cases("published", [exchange_id]) if "request" in c.data]
    assert signable, exchange_id
    for request in signable:
        secret = profile.secret()
        signed = scheme_for(exchange_id).sign(request, profile.credential(exchange_id, "hmac", secret),
                                              fixed_environment(NOW_MS))
        assert secret not in repr(signed)
        key = EXCHANGES[exchange_id].hmac_key(secret.encode())
        assert key.hex() not in repr(signed)  # nor the key bytes it decodes to (Kraken)

