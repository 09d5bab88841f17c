"""The policy file and its pure decisions: parsing errors, endpoint patterns, path shape, clock, key dates,
order caps, templates; and the bot credentials file."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bots import BotsFileError, add_bot, hash_token, list_bots, load_bots, revoke_bot
from agent.policy import (
    PolicyError,
    Refusal,
    caller_timestamps,
    check_clock,
    check_endpoint,
    check_key_dates,
    check_method,
    check_names,
    check_orders,
    check_recv_window,
    check_shape,
    check_symbols,
    evaluate,
    parse_policy,
)
from agent.exchanges import EXCHANGES
from agent.policy_templates import default_policy
from agent.rules import OrderFacts, inspect
from agent.rules.view import view
from signing_agent_client.request import RawBody, RequestInvalid, UnsignedRequest

BASE = b"""
[bots.b1]
keys = ["k1"]

[keys.k1]
endpoints = ["POST /api/v3/order", "GET /api/v3/*", "* /sapi/**"]
symbols = ["btcusdt"]
max_order = { BTCUSDT = "0.5" }
max_order_quote = { "*" = "1000" }
"""


def key(text: bytes = BASE, label: str = "k1"):
    return parse_policy(text).for_key(label)


@pytest.mark.parametrize("text,fragment", [
    (b"[keys.k]\nendpoints = ['GET /x']\nbogus = 1\n", "unknown setting"),
    (b"[keys.k]\nsymbols = ['A']\n", "'endpoints' is required"),
    (b"[keys.k]\nendpoints = ['FETCH /x']\n", "METHOD /path"),
    (b"[keys.k]\nendpoints = ['GET x']\n", "METHOD /path"),
    (b"[keys.k]\nendpoints = ['GET /x']\nmax_order = { A = 0.5 }\n", "decimal string"),
    (b"[keys.k]\nendpoints = ['GET /x']\nmax_order = { A = \"-1\" }\n", "positive"),
    (b"[keys.k]\nendpoints = ['GET /x']\ntimestamps = 'sometimes'\n", "timestamps must be"),
    (b"[keys.k]\nendpoints = ['GET /x']\nexpires = 2027-01-01T00:00:00\n", "time zone"),
    (b"[keys.k]\nendpoints = ['GET /x']\nnot_before = 2027-01-01\nexpires = 2026-01-01\n", "after not_before"),
    (b"[keys.k]\nendpoints = ['GET /x']\nallow = ['teleport']\n", "unknown categories"),
    (b"[keys.k]\nendpoints = ['GET /x']\nrate_per_second = 0\n", "above 0"),
    (b"[keys.k]\nendpoints = ['GET /x']\ntimestamp_skew_ms = 600000\n", "from 0 to 60000"),
    (b"[bots.b]\nkeys = 'k'\n", "list of non-empty strings"),
    (b"[keys.k\n", "not valid TOML"),
    (b"[surprise]\n", "unknown setting"),
])
def test_a_wrong_policy_is_refused_naming_the_setting(text: bytes, fragment: str):
    with pytest.raises(PolicyError, match=fragment):
        parse_policy(text)


def test_warnings_name_risky_settings():
    policy = parse_policy(b"[bots.b]\nkeys=['ghost']\n[keys.k]\nendpoints=[]\ntimestamps='any'\nallow=['transfer']\n")
    text = "\n".join(policy.warnings)
    assert "ghost" in text and "test vectors" in text and "transfer" in text


def test_endpoint_patterns_match_segments_exactly():
    k = key()
    check_endpoint(k, "POST", "/api/v3/order")
    check_endpoint(k, "GET", "/api/v3/account")
    check_endpoint(k, "DELETE", "/sapi/v1/anything/at/all")
    for method, path in (("GET", "/api/v3/order/extra"), ("POST", "/api/v3/Order"), ("DELETE", "/api/v3/order"),
                         ("POST", "/api/v3/order/"), ("GET", "/api/v4/account")):
        with pytest.raises(Refusal) as caught:
            check_endpoint(k, method, path)
        assert caught.value.rule == "endpoint"


@pytest.mark.parametrize("path", ["//x", "/a//b", "/a/./b", "/a/../b", "/a/%2e%2e/b", "/a/b\\c", "/a/b%2F",
                                  "/a/..;/b", "/a/.hidden/b", "/a/b;c"])
def test_non_canonical_paths_are_refused(path: str):
    with pytest.raises(Refusal) as caught:
        check_shape(UnsignedRequest("GET", path, (), None))
    assert caught.value.rule == "path"


@pytest.mark.parametrize("path", ["/", "/api/v3/order", "/api/v2/balance/", "/v2/auth/r/trades/tBTCUSD/hist",
                                  "/api/v4/futures/usdt/orders", "/api/v2/private/get_account_summary"])
def test_canonical_paths_pass(path: str):
    check_shape(UnsignedRequest("GET", path, (("a", "1"),), (("b", "2"),)))


@pytest.mark.parametrize("exchange,request_", [
    ("binance", UnsignedRequest("POST", "/x", (("symbol", "A"),), (("symbol", "B"),))),
    ("binance", UnsignedRequest("POST", "/x", (("symbol", "A"), ("Symbol", "B")), None)),
    ("binance", UnsignedRequest("POST", "/x", (), RawBody("symbol=A&SYMBOL=B"))),       # a raw form body
    ("okx", UnsignedRequest("POST", "/x", (), RawBody('{"instId":"A","INSTID":"B"}'))),  # a raw JSON body
])
def test_names_repeated_across_parts_or_letter_case_are_refused(exchange: str, request_: UnsignedRequest):
    with pytest.raises(Refusal) as caught:
        check_names(view(EXCHANGES[exchange], request_).params, len(request_.query))
    assert caught.value.rule == "duplicate-parameter"


def test_a_name_repeated_with_the_same_text_value_is_one_parameter():
    # ccxt's Gate amend: the same fields in the query and the JSON body. The exchange reads either, and
    # both say the same, so nothing is ambiguous; another spelling or value, or a non-text value, is.
    query = (("currency_pair", "BTC_USDT"), ("amount", "0.02"))

    def names(query: tuple, body: str) -> None:
        request = UnsignedRequest("PATCH", "/api/v4/spot/orders/1", query, RawBody(body))
        check_names(view(EXCHANGES["gate"], request).params, len(request.query))

    names(query, '{"currency_pair":"BTC_USDT","amount":"0.02"}')
    for body in ('{"currency_pair":"BTC_USDT","amount":"2"}', '{"currency_pair":"BTC_USDT","AMOUNT":"0.02"}',
                 '{"currency_pair":"BTC_USDT","amount":0.02}'):
        with pytest.raises(Refusal, match="send it once") as caught:
            names(query, body)
        assert caught.value.rule == "duplicate-parameter"


@pytest.mark.parametrize("exchange,request_", [
    # Twice in one part, even with the same text: a server may join the values ("0.01,0.01").
    ("binance", UnsignedRequest("POST", "/x", (("quantity", "0.01"), ("quantity", "0.01")), None)),
    ("gate", UnsignedRequest("PATCH", "/api/v4/spot/orders/1", (("amount", "0.02"), ("amount", "0.02")),
                             RawBody('{"amount":"0.02"}'))),
])
def test_a_name_twice_in_one_part_is_refused_even_with_the_same_value(exchange: str, request_: UnsignedRequest):
    with pytest.raises(Refusal) as caught:
        check_names(view(EXCHANGES[exchange], request_).params, len(request_.query))
    assert caught.value.rule == "duplicate-parameter"


def test_a_form_body_naming_a_member_twice_does_not_parse():
    with pytest.raises(RequestInvalid, match="appears twice"):
        view(EXCHANGES["binance"], UnsignedRequest("POST", "/x", (), RawBody("quantity=0.01&quantity=0.01")))


NOW = 1_800_000_000_000


@pytest.mark.parametrize("mode,stamp,ok", [
    ("skew", NOW - 5_000, True), ("skew", NOW + 5_000, True), ("skew", NOW - 5_001, False),
    ("skew", NOW + 5_001, False), ("agent", NOW, False), ("any", 0, True), ("any", NOW - 10**9, True),
])
def test_caller_clocks(mode: str, stamp: int, ok: bool):
    k = key(BASE.replace(b"[keys.k1]\n", f"[keys.k1]\ntimestamps = '{mode}'\n".encode()))
    if ok:
        check_clock(k, [stamp], NOW)
    else:
        with pytest.raises(Refusal) as caught:
            check_clock(k, [stamp], NOW)
        assert caught.value.rule == "clock"
    check_clock(k, [], NOW)  # no caller clock: always fine


def test_timestamp_parameters_in_seconds_or_milliseconds():
    request = UnsignedRequest("GET", "/x", (("timestamp", str(NOW // 1000)),), (("TIMESTAMP", str(NOW)),))
    assert caller_timestamps(request.query + request.body) == [NOW - NOW % 1000, NOW]
    with pytest.raises(Refusal):
        caller_timestamps((("timestamp", "soon"),))


def test_key_dates_and_age():
    policy = parse_policy(b"[keys.k]\nendpoints=[]\nmax_age_days=90\nwarn_age_days=10\n"
                          b"not_before=2026-01-01T00:00:00Z\nexpires=2027-01-01T00:00:00Z\n").for_key("k")
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert check_key_dates(policy, (now - timedelta(days=10)).isoformat(), now).warning is None
    assert "rotate" in check_key_dates(policy, (now - timedelta(days=85)).isoformat(), now).warning
    for created, when, rule in (((now - timedelta(days=91)).isoformat(), now, "key-age"),
                                (now.isoformat(), datetime(2025, 12, 31, tzinfo=timezone.utc), "not-before"),
                                (now.isoformat(), datetime(2027, 1, 1, tzinfo=timezone.utc), "expired"),
                                ("garbage", now, "key-age")):
        with pytest.raises(Refusal) as caught:
            check_key_dates(policy, created, when)
        assert caught.value.rule == rule


@pytest.mark.parametrize("warn_days", [10, 0, 120])  # 120: a warning window longer than the maximum age
def test_evaluate_decides_key_dates_as_check_key_dates_to_the_millisecond(warn_days: int):
    """evaluate skips check_key_dates well inside a key's dates (bounds worked out once per key): at and
    around every bound, to the millisecond, it must refuse and warn exactly as check_key_dates does."""
    policy = parse_policy(b"[keys.k]\nendpoints=['GET /x']\nmax_age_days=90\nwarn_age_days=%d\n"
                          b"not_before=2026-01-01T00:00:00Z\nexpires=2026-06-01T00:00:00.0005Z\n" % warn_days
                          ).for_key("k")
    created = datetime(2026, 1, 10, 12, 0, 0, 250_000, tzinfo=timezone.utc)
    bounds = [policy.not_before, policy.expires, created + timedelta(days=90),
              created + timedelta(days=90) - timedelta(days=warn_days)]
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    request = UnsignedRequest("GET", "/x").validated()
    for bound in bounds:
        centre = (bound - epoch) // timedelta(milliseconds=1)
        for now_ms in range(centre - 3, centre + 4):
            try:
                expected = ("ok", check_key_dates(policy, created.isoformat(),
                                                  datetime.fromtimestamp(now_ms / 1000, timezone.utc)).warning)
            except Refusal as refusal:
                expected = (refusal.rule, None)
            got = evaluate(policy, EXCHANGES["binance"], request, created=created.isoformat(), timestamp_ms=0,
                           now_ms=now_ms)
            rule = got.refusal.rule if isinstance(got.refusal, Refusal) and got.refusal.rule in (
                "not-before", "expired", "key-age") else "ok"
            assert (rule, got.age_warning) == expected, (bound, now_ms)


def test_order_caps_per_symbol_and_quote():
    k = key()
    check_orders(k, [OrderFacts("BTCUSDT", Decimal("0.5"), None)])
    check_orders(k, [OrderFacts("ETHUSDT", Decimal("100"), Decimal("999"))])  # no base cap on ETH; quote ok
    check_orders(k, [OrderFacts("BTCUSDT", None, Decimal("999"))])  # BTC is capped in both units
    base_only = key(BASE.replace(b'max_order_quote = { "*" = "1000" }\n', b""))
    no_list = key(BASE.replace(b'symbols = ["btcusdt"]\n', b""))  # caps, no symbol list
    for policy, order in ((k, OrderFacts("BTCUSDT", Decimal("0.50001"), None)),
                          (k, OrderFacts("ETHUSDT", None, Decimal("1001"))),
                          (k, OrderFacts("BTCUSDT", None, None)),
                          (no_list, OrderFacts(None, Decimal("0.1"), None)),       # no readable symbol
                          (base_only, OrderFacts("BTCUSDT", None, Decimal("5000000")))):  # sized in the other unit
        with pytest.raises(Refusal) as caught:
            check_orders(policy, [order])
        assert caught.value.rule == "order-size"
    check_orders(base_only, [OrderFacts("ETHUSDT", None, Decimal("5000000"))])  # ETH is not capped there


def test_an_order_without_a_readable_symbol_is_refused_on_a_key_with_a_symbol_list():
    # Fail closed: the symbol list cannot be checked against an order whose symbol the rules cannot
    # read (none sent, spelled twice, not text, an amend by order id), with or without size caps.
    listed_uncapped = key(b"[keys.k1]\nendpoints = []\nsymbols = ['BTCUSDT']\n")
    for policy in (key(), listed_uncapped):
        for orders in ([OrderFacts(None, Decimal("0.1"), None)], [OrderFacts(None, None, None)],
                       [OrderFacts("BTCUSDT", Decimal("0.1"), None), OrderFacts(None, Decimal("0.1"), None)]):
            with pytest.raises(Refusal) as caught:
                check_orders(policy, orders)
            assert caught.value.rule == "symbol"
            assert "send the order's symbol" in caught.value.message and "symbol, instId" in caught.value.message
            with pytest.raises(Refusal) as caught:
                check_symbols(policy, ["BTCUSDT"], orders)
            assert caught.value.rule == "symbol"
        check_orders(policy, [OrderFacts("BTCUSDT", Decimal("0.1"), None)])
        check_symbols(policy, ["BTCUSDT"], [OrderFacts("BTCUSDT", Decimal("0.1"), None)])
    # A key without a symbol list (and without caps) signs it: nothing to check it against.
    anything = key(b"[keys.k1]\nendpoints = []\n")
    check_orders(anything, [OrderFacts(None, Decimal("0.1"), None)])
    check_symbols(anything, [], [OrderFacts(None, None, None)])
    # Through the rules, as the guard reads a request: a Binance order with no symbol, and one whose
    # symbol is not text (a JSON number in a Bybit body).
    for exchange, request in (
        ("binance", UnsignedRequest("POST", "/api/v3/order", (("side", "BUY"), ("quantity", "1")), None)),
        ("bybit", UnsignedRequest("POST", "/v5/order/create", (), RawBody(
            '{"category":"linear","symbol":7,"side":"Buy","orderType":"Market","qty":"1"}'))),
    ):
        facts = inspect(EXCHANGES[exchange], request)
        assert facts.orders and facts.orders[0].symbol is None and facts.forbidden is None
        check_symbols(listed_uncapped, facts.symbols)  # the symbols it names: none to refuse
        with pytest.raises(Refusal) as caught:
            check_orders(listed_uncapped, facts.orders)  # the guard's next check
        assert caught.value.rule == "symbol"


def test_the_guard_refuses_an_order_without_a_readable_symbol_on_a_key_with_a_symbol_list(tmp_path: Path):
    from agent.alerts import AlertSender
    from agent.guard import Guard

    (tmp_path / "policy.toml").write_text(
        "[keys.listed]\nendpoints = ['POST /api/v3/order']\nsymbols = ['BTCUSDT']\ntimestamps = 'any'\n"
        "[keys.open]\nendpoints = ['POST /api/v3/order']\ntimestamps = 'any'\n")
    (tmp_path / "bots.toml").write_text("")
    guard = Guard(policy_path=tmp_path / "policy.toml", bots_path=tmp_path / "bots.toml",
                  state_dir=tmp_path / "state", audit=None, alerts=AlertSender(None))
    created = datetime.fromtimestamp(NOW / 1000, timezone.utc).isoformat()

    def check(label: str, query) -> tuple[str, ...]:
        return guard.check(guard.policy.for_key(label), exchange=EXCHANGES["binance"], created=created,
                           request=UnsignedRequest("POST", "/api/v3/order", query, None), timestamp_ms=0, now_ms=NOW)

    try:
        order = (("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01"))
        assert check("listed", (("symbol", "BTCUSDT"),) + order) == ("BTCUSDT",)
        with pytest.raises(Refusal) as caught:
            check("listed", order)
        assert caught.value.rule == "symbol" and "send the order's symbol" in caught.value.message
        assert check("open", order) == ()  # no symbol list: nothing to check the order against
    finally:
        guard.stop()


def test_patch_is_signed_only_where_the_exchange_uses_it():
    # Gate amends a spot order with PATCH /api/v4/spot/orders/{id}; no other exchange here uses PATCH,
    # so a PATCH for one of them is refused naming the methods it takes, before any rule reads it.
    amend = UnsignedRequest("PATCH", "/api/v4/spot/orders/123", (("currency_pair", "BTC_USDT"),), RawBody('{"amount":"1"}'))
    check_method(EXCHANGES["gate"], amend)
    users = sorted(e for e, record in EXCHANGES.items() if "PATCH" in record.rules.methods)
    assert users == ["gate"]
    for exchange in sorted(set(EXCHANGES) - {"gate"}):
        with pytest.raises(RequestInvalid, match=rf"method PATCH is not a method {EXCHANGES[exchange].name}'s API "
                                                 r"uses \(it takes GET, POST, PUT, DELETE\): send the method"):
            check_method(EXCHANGES[exchange], UnsignedRequest("PATCH", "/api/v3/order", (), None))
        for method in ("GET", "POST", "PUT", "DELETE"):
            check_method(EXCHANGES[exchange], UnsignedRequest(method, "/api/v3/order", (), None))


def test_receive_windows_are_bounded():
    k = key()
    check_recv_window(k, [("recvWindow", "10000")])
    for value in ("10001", "60000", "1e9", "lots"):
        with pytest.raises(Refusal) as caught:
            check_recv_window(k, [("recvWindow", value)])
        assert caught.value.rule == "clock"


def test_keys_under_the_default_table_keep_their_own_names():
    policy = parse_policy(b'[keys."*"]\nendpoints = []\nrate_per_second = 1\n')
    assert policy.for_key("fa").label == "fa" and policy.for_key("fb").label == "fb"



@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
def test_every_template_parses_and_allows_no_forbidden_endpoint(exchange: str):
    policy = parse_policy(default_policy(exchange, "k", bot="b").encode())
    assert policy.bots["b"].may_use("k") and policy.for_key("k").endpoints
    for endpoint in EXCHANGES[exchange].template.trading:
        method, _, path = endpoint.partition(" ")
        concrete = path.replace("*", "BTCUSDT")
        facts = inspect(EXCHANGES[exchange], UnsignedRequest(method, concrete, (), None))
        # Deribit: every signature is also a login, so the template refuses all until `session-token`
        # is allowed knowingly (its comment says how); nothing else is forbidden.
        login = EXCHANGES[exchange].rules.signature_is_login
        assert [c for c, why in facts.violations if why != login] == [], (exchange, endpoint, facts.forbidden_why)
        assert ("session-token" in [c for c, _ in facts.violations]) == (login is not None)
        assert (login is None) or '# allow = ["session-token"]' in default_policy(exchange, "k")


@pytest.mark.parametrize("exchange", sorted(name for name, record in EXCHANGES.items() if record.template.settings))
def test_futures_templates_say_how_to_allow_leverage(exchange: str):
    text = default_policy(exchange, "k")
    assert "raise leverage, then trade" in text  # why it is off by default
    unbound = not EXCHANGES[exchange].rules.path_bound
    assert ('# allow = ["account-settings"]' in text) == unbound
    # Following the comment: uncomment `allow` (unbound exchanges) and add the endpoints to the list.
    listed = "\n".join(f'  "{e}",' for e in EXCHANGES[exchange].template.settings)
    edited = text.replace("# allow = ", "allow = ").replace("\n]\n", "\n" + listed + "\n]\n", 1)
    policy = parse_policy(edited.encode()).for_key("k")
    assert policy.allow == (frozenset({"account-settings"}) if unbound else frozenset())
    for endpoint in EXCHANGES[exchange].template.settings:
        method, _, path = endpoint.partition(" ")
        check_endpoint(policy, method, path.replace("*", "X"))
        facts = inspect(EXCHANGES[exchange], UnsignedRequest(method, path.replace("*", "BTC_USDT"), (), None))
        # Unbound: account-settings, which the edited key allows; path-bound: the endpoint list decides.
        assert facts.forbidden == ("account-settings" if unbound else None), (endpoint, facts.forbidden_why)
        assert facts.forbidden is None or facts.forbidden in policy.allow


def test_templates_without_futures_say_nothing_of_leverage():
    for exchange in (name for name, record in EXCHANGES.items() if not record.template.settings):
        assert "leverage" not in default_policy(exchange, "k")


def test_the_futures_templates():
    futures = {name for name, record in EXCHANGES.items() if record.template.settings}
    assert futures == {"binanceusdm", "bybit", "mexc", "okx", "kucoinfutures", "bitget", "gate"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes):
    try:
        parse_policy(data)
    except PolicyError:
        pass


# -- bot credentials -------------------------------------------------------------------------


def test_bots_file_holds_hashes_only_and_is_private(tmp_path: Path):
    path = tmp_path / "bots.toml"
    token = add_bot(path, "mm-1")
    assert token and token not in path.read_text() and hash_token(token) in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_bots(path).by_bearer(token).name == "mm-1"
    assert load_bots(path).by_bearer(token + "x") is None
    with pytest.raises(BotsFileError, match="exists"):
        add_bot(path, "mm-1")
    second = add_bot(path, "mm-2")
    revoke_bot(path, "mm-1")
    assert [b.name for b in list_bots(path)] == ["mm-2"]
    assert load_bots(path).by_bearer(token) is None and load_bots(path).by_bearer(second).name == "mm-2"
    with pytest.raises(BotsFileError, match="no bot"):
        revoke_bot(path, "mm-1")


@pytest.mark.parametrize("text,fragment", [
    ('[bots.a]\ntoken_sha256 = "zz"\n', "64 lowercase hex"),
    ('[bots.a]\ncreated = "x"\n', "exactly one"),
    ('[bots."bad name"]\ntoken_sha256 = "' + "a" * 64 + '"\n', "invalid"),
    ('[bots.a]\ntoken_sha256 = "' + "a" * 64 + '"\n[bots.b]\ntoken_sha256 = "' + "a" * 64 + '"\n', "shares"),
])
def test_a_wrong_bots_file_is_refused(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "bots.toml"
    path.write_text(text)
    with pytest.raises(BotsFileError, match=fragment):
        load_bots(path)


# -- rate buckets shared by processes ----------------------------------------------------------


def _take_many(path: str, count: int, out) -> None:
    from agent.rates import SharedBuckets

    buckets = SharedBuckets(Path(path))
    out.put(sum(buckets.take("bot:mm-1", 0.001, 10) for _ in range(count)))


def test_rate_buckets_are_shared_by_processes(tmp_path: Path):
    """Four processes (as `serve --workers 4` would) draw 40 tokens from one bucket of 10: 10 pass in all."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take_many, args=(str(tmp_path / "rates.bin"), 10, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sum(out.get(timeout=5) for _ in procs) == 10


def test_the_compiled_endpoint_matcher_agrees_with_each_pattern_on_its_own():
    from agent.policy import parse_policy

    patterns = ["POST /api/v3/order", "GET /api/v3/*", "* /sapi/**/status", "DELETE /api/v3/order/*/x"]
    policy = parse_policy(("[keys.k]\nendpoints = [" + ", ".join(f'"{p}"' for p in patterns) + "]\n").encode())
    key = policy.for_key("k")
    paths = ["/api/v3/order", "/api/v3/orders", "/api/v3/a/b", "/sapi/v1/x/status", "/sapi/status", "/api/v3/order/1/x",
             "/API/v3/order", "/api/v3/order/"]
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        for path in paths:
            expected = any(p.matches(method, path) for p in key.endpoints)
            assert key.allows(method, path) == expected, (method, path)
    assert key.allows("POST", "/api/v3/order") and not key.allows("GET", "/api/v3/order/1/x")
    assert key.allows("PATCH", "/sapi/v1/x/status") and not key.allows("PATCH", "/api/v3/order")
    assert not parse_policy(b"[keys.k]\nendpoints = []\n").for_key("k").allows("GET", "/")


def test_the_default_key_table_is_copied_once_per_label_under_its_name():
    from agent.policy import parse_policy

    policy = parse_policy(b'[keys."*"]\nendpoints = ["GET /x"]\nrate_per_second = 2\n')
    first = policy.for_key("a")
    assert first.label == "a" and policy.for_key("a") is first and policy.for_key("b").label == "b"
    assert first.allows("GET", "/x") and not first.allows("POST", "/x")
