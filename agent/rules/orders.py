"""Symbols and orders: what a request trades, as each exchange reads it.

Symbols are collected from every parameter that names one (per exchange: symbol, instId,
product_id, instrument_name, currency_pair...), at any depth of a JSON body or of JSON text inside a
parameter (Binance's batchOrders and symbols=["A","B"]), comma-separated lists split, and from the
path where the exchange puts the pair there (Bitstamp /api/v2/buy/btcusd/, Gate
/futures/usdt/positions/BTC_USDT/leverage).

Orders are recognised by endpoint on exchanges that sign the path, and by parameters on those that
do not (Binance, MEXC, Bybit): there, a signature made for any path can be sent to the order
endpoint, so any request carrying an order's parameters (side, quantity...) is an order, whatever its
path. An amend that does not change the size (no size parameter) is not reported as an order: the
size was checked when the order was placed. A batch the rules cannot read as a list of objects is
reported as one order of unknown size; a MEXC futures body that is a list of order ids (a cancel)
is no order. Close-position endpoints (which only reduce) and test or preview endpoints (which place
nothing, on exchanges that sign the path) are not orders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

from agent.rules.facts import OrderFacts
from agent.rules.view import AMBIGUOUS, MEXC_CONTRACT_PREFIX, Fields, View, decimal, maybe_json, members, objects

BINANCE_IDS = ("binance", "binanceusdm", "binanceus", "binancetr")

SYMBOL_PARAMS: dict[str, frozenset[str]] = {
    **{name: frozenset({"symbol", "symbols", "pair"}) for name in BINANCE_IDS},
    "okx": frozenset({"instid", "instfamily", "uly", "sprdid"}),
    "kucoin": frozenset({"symbol", "symbols"}),
    "kucoinfutures": frozenset({"symbol", "symbols"}),
    "bitget": frozenset({"symbol", "symbols"}),
    "kraken": frozenset({"pair"}),
    "bitfinex": frozenset({"symbol"}),
    "gemini": frozenset({"symbol"}),
    "bybit": frozenset({"symbol"}),
    "mexc": frozenset({"symbol", "symbols"}),
    "coinbase": frozenset({"product_id", "product_ids"}),
    "bitstamp": frozenset({"pair"}),
    "cryptocom": frozenset({"instrument_name"}),
    "deribit": frozenset({"instrument_name"}),
    "gate": frozenset({"currency_pair", "contract", "market"}),
    "htx": frozenset({"symbol", "contract_code"}),
}

# Path segments that carry a pair (key regex, fullmatch; group 1 is the symbol).
_PATH_SYMBOLS: dict[str, tuple[re.Pattern[str], ...]] = {
    "bitstamp": (
        re.compile(r"/api/v2/(?:buy|sell)(?:/(?:market|instant))?/([^/]+)"),
        re.compile(r"/api/v2/(?:open_orders|cancel_all_orders|user_transactions|balance|fees/trading)/([^/]+)"),
    ),
    "gate": (re.compile(r"/api/v4/(?:futures|delivery)/[^/]+/(?:dual_comp/)?positions/([^/]+)(?:/.*)?"),),
    "coinbase": (re.compile(r"/api/v3/brokerage/(?:products|cfm/positions|intx/positions)/([^/]+)(?:/.*)?"),),
}
_NOT_SYMBOLS = frozenset({"all", "cross_mode", "market", "instant"})


def symbols(v: View) -> tuple[str, ...]:
    names = SYMBOL_PARAMS.get(v.exchange, frozenset())
    found: list[str] = []
    for pattern in _PATH_SYMBOLS.get(v.exchange, ()):
        match = pattern.fullmatch(v.key)
        if match and match.group(1) not in _NOT_SYMBOLS:
            found.append(match.group(1).upper())
    # Every parameter (query, form, JSON members) and everything nested in it; a JSON array body.
    pairs: list[tuple[str, object]] = []
    for name, value in v.params:
        pairs.append((name, value))
        pairs.extend(members(value))
    if isinstance(v.body, list):
        pairs.extend(members(v.body))
    for name, value in pairs:
        if name.lower() in names:
            found.extend(_symbol_values(value))
    return tuple(dict.fromkeys(found))


def _symbol_values(value: object) -> list[str]:
    value = maybe_json(value)
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip().upper() for part in item.split(",") if part.strip())
    return out


# -- helpers ----------------------------------------------------------------------------------------

BASE, QUOTE, BOTH = "base", "quote", "both"


def _sized(symbol: str | None, value: object, unit: str) -> OrderFacts:
    number = decimal(value)
    if unit == BASE:
        return OrderFacts(symbol, number, None)
    if unit == QUOTE:
        return OrderFacts(symbol, None, number)
    return OrderFacts(symbol, number, number)


def _fields(obj: dict) -> Fields:
    return Fields(obj.items())


def _unsure(f: Fields, *names: str) -> bool:
    """A field that decides a unit is spelled twice or is not text: the unit is then unknown."""
    return any(f.get(name) is AMBIGUOUS or not isinstance(f.get(name), (str, type(None))) for name in names)


def _first(f: Fields, *names: str) -> object:
    """The value of the one of NAMES present; AMBIGUOUS when several are (the exchange's choice is
    unknown); None when none is."""
    present = [name for name in names if f.has(name)]
    if not present:
        return None
    return f.get(present[0]) if len(present) == 1 else AMBIGUOUS


def _batch(v: View, f: Fields, *names: str, array_body: bool = True) -> list[dict] | None:
    """The order objects of a batch: the JSON array body, or the list under one of NAMES (any
    spelling). None when there is no batch; [{}] when there is one the rules cannot read."""
    if array_body and isinstance(v.body, list):
        found = objects(v.body)
        return found if len(found) == len(v.body) and found else [{}]
    values = [value for name in names for value in f.all(name)]
    if not values:
        return None
    result: list[dict] = []
    for value in values:
        parsed = maybe_json(value)
        items = objects(parsed)
        if not isinstance(parsed, list) or len(items) != len(parsed) or not items:
            return [{}]
        result.extend(items)
    return result


# -- per exchange ----------------------------------------------------------------------------------


def _binance_like(v: View) -> list[OrderFacts]:
    """Binance (and MEXC spot): any path, any method. An order is any parameter set with a side or a
    quantity: quantity, workingQuantity, pendingQuantity (order lists) are each an order's size."""
    top = v.fields()
    out: list[OrderFacts] = []
    names = top.names()
    if {"side", "workingside", "pendingside", "quoteorderqty"} & names or any(n.endswith("quantity") for n in names):
        out += _binance_order(top, None)
    for list_name in ("batchOrders", "legs"):
        for obj in _batch(v, top, list_name) or ():
            out += _binance_order(_fields(obj), top.symbol("symbol"))
    return out


def _binance_order(f: Fields, inherited: str | None) -> list[OrderFacts]:
    symbol = f.symbol("symbol") or inherited
    quote = f.number("quoteOrderQty")
    sizes = [name for name in f.names() if name.endswith("quantity")]
    if not sizes:
        return [OrderFacts(symbol, None, quote)]
    return [OrderFacts(symbol, f.number(name), quote if i == 0 else None) for i, name in enumerate(sizes)]


def _mexc(v: View) -> list[OrderFacts]:
    if not v.key.startswith(MEXC_CONTRACT_PREFIX):
        return _binance_like(v)
    # Futures: a GET signs a sorted query and a POST a JSON body; only a POST can place an order.
    if v.method != "POST":
        return []
    top = v.fields()
    if isinstance(v.body, list):
        if v.body and all(_order_id(element) for element in v.body):
            return []  # a list of order ids (order/cancel): no endpoint places orders from one
        return [_sized(f.symbol("symbol"), f.get("vol"), BASE) for f in map(_fields, _batch(v, top) or [{}])]
    if top.has("vol") or top.has("side"):
        return [_sized(top.symbol("symbol"), top.get("vol"), BASE)]
    return []


def _order_id(value: object) -> bool:
    """A plain id (text or number), not an object or a list written as JSON text."""
    return (isinstance(value, (str, int, Decimal)) and not isinstance(value, bool)
            and not isinstance(maybe_json(value), (dict, list)))


def _bybit(v: View) -> list[OrderFacts]:
    if v.method != "POST":  # GET payloads (query strings) cannot be replayed as a POST body
        return []
    top = v.fields()
    out: list[OrderFacts] = []
    if top.has("qty") or top.has("side"):
        out.append(_bybit_order(top, top, None))
    for obj in _batch(v, top, "request") or ():
        out.append(_bybit_order(_fields(obj), top, top.symbol("symbol")))
    return out


def _bybit_order(f: Fields, top: Fields, inherited: str | None) -> OrderFacts:
    symbol = f.symbol("symbol") or inherited
    holder = f if f.has("category") else top
    if _unsure(f, "orderType", "side", "marketUnit") or _unsure(holder, "category"):
        return _sized(symbol, f.get("qty"), BOTH)
    category, order_type, side = holder.text("category"), f.text("orderType"), f.text("side")
    if order_type != "market" or category not in ("spot", ""):
        return _sized(symbol, f.get("qty"), BASE)
    unit = {"quotecoin": QUOTE, "basecoin": BASE}.get(f.text("marketUnit")) if f.has("marketUnit") else None
    if unit is None and not f.has("marketUnit") and category == "spot":
        # Bybit: a spot market buy is sized in the quote coin unless marketUnit says otherwise.
        unit = QUOTE if side == "buy" else BASE if side == "sell" else BOTH
    return _sized(symbol, f.get("qty"), unit or BOTH)


_OKX_LIMIT_TYPES = frozenset({"limit", "post_only", "fok", "ioc", "mmp", "mmp_and_post_only", "op_fok"})
_OKX = {
    "/api/v5/trade/order": ("sz", False),
    "/api/v5/trade/batch-orders": ("sz", True),
    "/api/v5/trade/order-algo": ("sz", False),
    "/api/v5/trade/amend-order": ("newsz", False),
    "/api/v5/trade/amend-batch-orders": ("newsz", True),
    "/api/v5/trade/amend-algos": ("newsz", False),
    "/api/v5/sprd/order": ("sz", False),
    "/api/v5/sprd/amend-order": ("newsz", False),
}


def _okx(v: View) -> list[OrderFacts]:
    spec = _OKX.get(v.key)
    if spec is None or v.method != "POST":
        return []
    size, _ = spec
    top = v.fields()
    # A batch is a JSON array; an object sent to a batch endpoint is read as one order.
    fields = [_fields(o) for o in _batch(v, top) or [{}]] if isinstance(v.body, list) else [top]
    out = []
    for f in fields:
        if size == "newsz" and not f.has(size):
            continue  # an amend of the price only
        symbol = f.symbol("instId") or f.symbol("sprdId")
        out.append(_sized(symbol, f.get(size), _okx_unit(f, symbol) if size == "sz" else BASE))
    return out


def _okx_unit(f: Fields, symbol: str | None) -> str:
    if symbol is None or symbol.count("-") != 1:
        return BASE if symbol is not None else BOTH  # derivatives: contracts (or the option's unit)
    if _unsure(f, "tgtCcy", "ordType", "side"):
        return BOTH
    target = f.text("tgtCcy")
    if f.has("tgtCcy"):
        return {"quote_ccy": QUOTE, "base_ccy": BASE}.get(target, BOTH)
    # No tgtCcy: limit orders are in base; OKX's docs make a spot market buy quote by default, ccxt
    # treats margin market buys as base: both.
    if f.text("ordType") in _OKX_LIMIT_TYPES or f.text("side") == "sell":
        return BASE
    return BOTH


_KUCOIN_PLACE = re.compile(
    r"/api/v1/(?:orders|hf/orders|hf/orders/sync|margin/order|stop-order|st-orders|copy-trade/futures/orders"
    r"|copy-trade/futures/st-orders)|/api/v3/(?:hf/margin/order|oco/order|hf/margin/oco-order|hf/margin/stop-order)"
    r"|/api/ua/v1/[^/]+/order/place"
)
_KUCOIN_BATCH = re.compile(
    r"/api/v1/(?:orders/multi|hf/orders/multi|hf/orders/multi/sync)|/api/ua/v1/[^/]+/order/place(?:-batch|/batch)"
)


def _kucoin(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    uta = v.key.startswith("/api/ua/")
    if _KUCOIN_BATCH.fullmatch(v.key):
        return [_kucoin_order(_fields(o), top.symbol("symbol"), uta) for o in _batch(v, top, "orderList") or [{}]]
    if _KUCOIN_PLACE.fullmatch(v.key):
        if isinstance(v.body, list):
            return [_kucoin_order(_fields(o), None, uta) for o in _batch(v, top) or [{}]]
        return [_kucoin_order(top, None, uta)]
    if v.key == "/api/v1/hf/orders/alter" and top.has("newSize"):
        return [_sized(top.symbol("symbol"), top.get("newSize"), BASE)]
    return []


def _kucoin_order(f: Fields, inherited: str | None, uta: bool) -> OrderFacts:
    symbol = f.symbol("symbol") or inherited
    if uta:
        if _unsure(f, "sizeUnit"):
            return _sized(symbol, f.get("size"), BOTH)
        unit = {"baseccy": BASE, "unit": BASE, "quoteccy": QUOTE}.get(f.text("sizeUnit"), BOTH)
        return _sized(symbol, f.get("size"), unit)
    # Classic: size (base, or lots for futures) or qty (base); funds or valueQty (quote).
    return OrderFacts(symbol, decimal(_first(f, "size", "qty")), decimal(_first(f, "funds", "valueQty")))


_BITGET: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # key: (kind, size field(s) rule, batch list names)
    "/api/v2/spot/trade/place-order": ("spot", "size", ()),
    "/api/v2/spot/trade/batch-orders": ("spot", "size", ("orderList",)),
    "/api/v2/spot/trade/cancel-replace-order": ("spot", "size", ()),
    "/api/v2/spot/trade/batch-cancel-replace-order": ("spot", "size", ("orderList",)),
    "/api/v2/spot/trade/place-plan-order": ("plan", "size", ()),
    "/api/v2/spot/trade/modify-plan-order": ("plan", "size", ()),
    "/api/v2/mix/order/place-order": ("base", "size", ()),
    "/api/v2/mix/order/batch-place-order": ("base", "size", ("orderList",)),
    "/api/v2/mix/order/place-plan-order": ("base", "size", ()),
    "/api/v2/mix/order/place-tpsl-order": ("base", "size", ()),
    "/api/v2/mix/order/click-backhand": ("base", "size", ()),
    "/api/v2/mix/order/modify-order": ("amend", "newSize", ()),
    "/api/v2/mix/order/modify-plan-order": ("amend", "newSize", ()),
    "/api/v2/mix/order/modify-tpsl-order": ("amend", "size", ()),
    "/api/v2/margin/crossed/place-order": ("margin", "", ()),
    "/api/v2/margin/isolated/place-order": ("margin", "", ()),
    "/api/v2/margin/crossed/batch-place-order": ("margin", "", ("orderList",)),
    "/api/v2/margin/isolated/batch-place-order": ("margin", "", ("orderList",)),
    "/api/spot/v1/trade/orders": ("spot", "quantity", ()),
    "/api/spot/v1/trade/batch-orders": ("spot", "quantity", ("orderList",)),
    "/api/spot/v1/plan/placeplan": ("spot", "size", ()),
    "/api/spot/v1/plan/modifyplan": ("amend", "size", ()),
    "/api/mix/v1/order/placeorder": ("base", "size", ()),
    "/api/mix/v1/order/batch-orders": ("base", "size", ("orderDataList",)),
    "/api/mix/v1/plan/placeplan": ("base", "size", ()),
    "/api/mix/v1/plan/placetpsl": ("base", "size", ()),
    "/api/mix/v1/plan/placetrailstop": ("base", "size", ()),
    "/api/margin/v1/cross/order/placeorder": ("margin", "", ()),
    "/api/margin/v1/isolated/order/placeorder": ("margin", "", ()),
    "/api/margin/v1/cross/order/batchplaceorder": ("margin", "", ("orderList",)),
    "/api/margin/v1/isolated/order/batchplaceorder": ("margin", "", ("orderList",)),
    "/api/v3/trade/place-order": ("uta", "qty", ()),
    "/api/v3/trade/place-strategy-order": ("uta", "qty", ()),
    "/api/v3/trade/place-reality-order": ("uta", "qty", ()),
    "/api/v3/trade/place-batch": ("uta", "qty", ("orderList",)),
    "/api/v3/trade/modify-order": ("amend", "qty", ()),
    "/api/v3/trade/batch-modify-order": ("amend", "qty", ("orderList",)),
    "/api/v3/trade/modify-strategy-order": ("amend", "qty", ()),
}


def _bitget(v: View) -> list[OrderFacts]:
    spec = _BITGET.get(v.key)
    if spec is None or v.method != "POST":
        return []
    kind, size, lists = spec
    top = v.fields()
    objs = _batch(v, top, *lists) if lists or isinstance(v.body, list) else None
    fields = [_fields(o) for o in objs] if objs is not None else [top]
    out = []
    for f in fields:
        symbol = f.symbol("symbol") or top.symbol("symbol")
        if kind == "amend":
            if f.has(size) or f.has("newQty"):
                out.append(_sized(symbol, _first(f, size, "newQty"), BASE))
        elif kind == "margin":
            out.append(OrderFacts(symbol, decimal(_first(f, "baseSize", "baseQuantity")),
                                  decimal(_first(f, "quoteSize", "quoteAmount"))))
        elif kind == "base":
            out.append(_sized(symbol, f.get(size), BASE))
        else:
            out.append(_sized(symbol, f.get(size), _bitget_unit(kind, f, top)))
    return out


def _bitget_unit(kind: str, f: Fields, top: Fields) -> str:
    if _unsure(f, "orderType", "side", "planType", "category"):
        return BOTH
    market_buy = f.text("orderType") == "market" and f.text("side") == "buy"
    if kind == "uta":
        # UTA qty: ccxt sends the base amount, Bitget's docs are not explicit for spot market buys.
        category = f.text("category") or top.text("category")
        return BOTH if market_buy and category in ("spot", "margin", "") else BASE
    if kind == "plan" and f.has("planType"):
        return {"total": QUOTE, "amount": BASE}.get(f.text("planType"), BOTH)
    # Spot: a market buy's size is the quote amount to spend.
    return QUOTE if market_buy else BASE


def _kraken(v: View) -> list[OrderFacts]:
    top = v.fields()
    name = v.key.removeprefix("/0/private/")
    if name == "addorder":
        return [_kraken_order(top, None)]
    if name == "addorderbatch":
        return [_kraken_order(_fields(o), top.symbol("pair")) for o in _batch(v, top, "orders") or [{}]]
    if name == "editorder" and top.has("volume"):
        return [_kraken_order(top, None)]
    if name == "amendorder" and top.has("order_qty"):
        return [_sized(top.symbol("pair"), top.get("order_qty"), BASE)]
    return []


def _kraken_order(f: Fields, inherited: str | None) -> OrderFacts:
    symbol = f.symbol("pair") or inherited
    if _unsure(f, "oflags"):
        return _sized(symbol, f.get("volume"), BOTH)
    flags = {flag.strip() for flag in f.text("oflags").split(",")}
    # viqc: "volume in quote currency".
    return _sized(symbol, f.get("volume"), QUOTE if "viqc" in flags else BASE)


def _bitfinex(v: View) -> list[OrderFacts]:
    top = v.fields()
    if v.key == "/v2/auth/w/order/submit":
        return [_bitfinex_order(top, amend=False)]
    if v.key == "/v2/auth/w/order/update":
        return [_bitfinex_order(top, amend=True)] if top.has("amount") or top.has("delta") else []
    if v.key == "/v2/auth/w/order/multi":
        out = []
        ops = maybe_json(top.get("ops"))
        for op in ops if isinstance(ops, list) else [None]:
            if not (isinstance(op, list) and len(op) == 2 and isinstance(op[0], str) and isinstance(op[1], dict)):
                out.append(OrderFacts(None, None, None))  # an operation the rules cannot read
                continue
            kind, payload = op[0].lower(), Fields(op[1].items())
            if kind == "on":
                out.append(_bitfinex_order(payload, amend=False))
            elif kind == "ou" and (payload.has("amount") or payload.has("delta")):
                out.append(_bitfinex_order(payload, amend=True))
        return out
    return []


def _bitfinex_order(f: Fields, amend: bool) -> OrderFacts:
    # A 'delta' changes the amount by an offset from a size the request does not show.
    amount = None if amend and f.has("delta") else f.get("amount")
    return _sized(f.symbol("symbol"), amount, BASE)


def _gemini(v: View) -> list[OrderFacts]:
    if v.key != "/v1/order/new":
        return []
    top = v.fields()
    return [_sized(top.symbol("symbol"), top.get("amount"), BASE)]


def _coinbase(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    if v.key == "/api/v3/brokerage/orders":
        symbol = top.symbol("product_id")
        config = maybe_json(top.get("order_configuration"))
        kinds = [value for value in config.values() if isinstance(value, dict)] if isinstance(config, dict) else []
        if not kinds:
            return [OrderFacts(symbol, None, None)]
        return [OrderFacts(symbol, decimal(k.get("base_size")), decimal(k.get("quote_size"))) for k in kinds]
    if v.key == "/api/v3/brokerage/orders/edit" and top.has("size"):
        return [_sized(top.symbol("product_id"), top.get("size"), BASE)]
    return []


_BITSTAMP_ORDER = re.compile(r"/api/v2/(buy|sell)(?:/(market|instant))?/([^/]+)")


def _bitstamp(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    if v.key == "/api/v2/replace_order":
        return [_sized(top.symbol("pair"), top.get("amount"), BASE)] if top.has("amount") else []
    match = _BITSTAMP_ORDER.fullmatch(v.key)
    if match is None or match.group(3) in ("market", "instant"):
        return []
    side, kind, pair = match.groups()
    symbol = pair.upper()
    unit = BASE
    if kind == "instant":
        if side == "buy":
            unit = QUOTE  # an instant buy spends an amount of the counter currency
        elif top.has("amount_in_counter"):
            flag = top.text("amount_in_counter")
            unit = QUOTE if flag in ("true", "1") else BASE if flag in ("false", "0") else BOTH
    return [_sized(symbol, top.get("amount"), unit)]


_CRYPTOCOM_PLACE = re.compile(r"/(?:exchange/v1|v1|v2)/private/(?:advanced/)?create-order")
_CRYPTOCOM_LIST = re.compile(r"/(?:exchange/v1|v1|v2)/private/(?:advanced/)?create-(?:order-list|oco|oto|otoco)")
_CRYPTOCOM_AMEND = re.compile(r"/(?:exchange/v1|v1|v2)/private/(?:advanced/)?amend-order")


def _cryptocom(v: View) -> list[OrderFacts]:
    top = v.fields()
    if _CRYPTOCOM_PLACE.fullmatch(v.key):
        return [_cryptocom_order(top)]
    if _CRYPTOCOM_LIST.fullmatch(v.key):
        return [_cryptocom_order(_fields(o)) for o in _batch(v, top, "order_list") or [{}]]
    if _CRYPTOCOM_AMEND.fullmatch(v.key) and top.has("new_quantity"):
        return [_sized(top.symbol("instrument_name"), top.get("new_quantity"), BASE)]
    return []


def _cryptocom_order(f: Fields) -> OrderFacts:
    return OrderFacts(f.symbol("instrument_name"), f.number("quantity"), f.number("notional"))


def _deribit(v: View) -> list[OrderFacts]:
    names = {v.key.removeprefix("/api/v2/")} | set(v.rpc_methods)
    top = v.fields()
    out: list[OrderFacts] = []
    if names & {"private/buy", "private/sell"}:
        out.append(_deribit_order(top))
    if names & {"private/edit", "private/edit_by_label"} and (top.has("amount") or top.has("contracts")):
        out.append(_deribit_order(top))
    if "private/mass_quote" in names:
        # Each quote is a bid and/or an ask on one instrument: one order each.
        for quote in _batch(v, top, "quotes", array_body=False) or [{}]:
            q = _fields(quote)
            sides = [side for side in ("bid", "ask") if q.has(side)]
            if not sides:
                out.append(OrderFacts(q.symbol("instrument_name"), None, None))
            for side in sides:
                out.append(OrderFacts(q.symbol("instrument_name"), Fields.of(q.get(side)).number("amount"), None))
    return out


def _deribit_order(f: Fields) -> OrderFacts:
    # 'contracts' may replace 'amount'; its unit differs, so only 'amount' is reported.
    return _sized(f.symbol("instrument_name"), f.get("amount"), BASE)


_GATE_DERIV = r"/api/v4/(?:futures|delivery)/[^/]+"


def _gate(v: View) -> list[OrderFacts]:
    top = v.fields()
    key, method = v.key, v.method
    if method == "POST" and key in ("/api/v4/spot/orders", "/api/v4/spot/cross_liquidate_orders"):
        return [_gate_spot(top, None)]
    if method == "POST" and key == "/api/v4/spot/pov_orders":  # an algorithm: the unit of its amount is not documented
        return [_sized(top.symbol("currency_pair"), top.get("amount"), BOTH)]
    if method == "POST" and key == "/api/v4/spot/batch_orders":
        return [_gate_spot(_fields(o), None) for o in _batch(v, top) or [{}]]
    if method == "POST" and key == "/api/v4/spot/amend_batch_orders":
        objs = [_fields(o) for o in _batch(v, top) or [{}]]
        return [_sized(f.symbol("currency_pair"), f.get("amount"), BASE)
                for f in objs if f.has("amount") or not f.names()]
    if method == "POST" and key == "/api/v4/spot/price_orders":
        return [_gate_spot(Fields.of(top.get("put")), top.symbol("market"))]
    if method == "POST" and (re.fullmatch(_GATE_DERIV + r"/(?:orders|bbo_orders)", key)
                             or key == "/api/v4/options/orders"):
        return [_sized(top.symbol("contract"), top.get("size"), BASE)]
    if method == "POST" and re.fullmatch(_GATE_DERIV + r"/batch_orders", key):
        return [_sized(f.symbol("contract"), f.get("size"), BASE) for f in map(_fields, _batch(v, top) or [{}])]
    if method == "POST" and re.fullmatch(_GATE_DERIV + r"/batch_amend_orders", key):
        objs = [_fields(o) for o in _batch(v, top) or [{}]]
        return [_sized(f.symbol("contract"), f.get("size"), BASE) for f in objs if f.has("size") or not f.names()]
    if method == "POST" and re.fullmatch(_GATE_DERIV + r"/price_orders", key):
        initial = Fields.of(top.get("initial"))
        return [_sized(initial.symbol("contract"), initial.get("size"), BASE)]
    if method in ("PUT", "PATCH") and re.fullmatch(r"/api/v4/spot/orders/[^/]+", key):
        return [_sized(top.symbol("currency_pair"), top.get("amount"), BASE)] if top.has("amount") else []
    if method in ("PUT", "PATCH") and re.fullmatch(_GATE_DERIV + r"/orders/[^/]+|/api/v4/options/orders/[^/]+", key):
        return [_sized(top.symbol("contract"), top.get("size"), BASE)] if top.has("size") else []
    return []


def _gate_spot(f: Fields, inherited: str | None) -> OrderFacts:
    symbol = f.symbol("currency_pair") or inherited
    if _unsure(f, "type", "side"):
        return _sized(symbol, f.get("amount"), BOTH)
    # Gate: a market buy's amount is the quote to spend; limit orders (the default type) are in base.
    order_type = f.text("type") or "limit"
    if order_type == "market" and f.text("side") == "buy":
        return _sized(symbol, f.get("amount"), QUOTE)
    return _sized(symbol, f.get("amount"), BASE if order_type in ("limit", "market") else BOTH)


_HTX_CONTRACT = re.compile(
    r"/(?:api|swap-api|linear-swap-api)/v1/(?:contract|swap|swap_cross)_(?:order|trigger_order|tpsl_order|track_order)"
)
_HTX_CONTRACT_BATCH = re.compile(r"/(?:api|swap-api|linear-swap-api)/v1/(?:contract|swap|swap_cross)_batchorder")


def _htx(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    key = v.key
    if key in ("/v1/order/orders/place", "/v1/order/auto/place"):
        return [_htx_spot(top)]
    if key == "/v1/order/batch-orders":
        return [_htx_spot(_fields(o)) for o in _batch(v, top, "orders") or [{}]]
    if key == "/v2/algo-orders":
        return [OrderFacts(top.symbol("symbol"), top.number("orderSize"), top.number("orderValue"))]
    if _HTX_CONTRACT.fullmatch(key) or key in ("/v5/trade/order", "/v5/algo/order"):
        return [_htx_contract(top)]
    if _HTX_CONTRACT_BATCH.fullmatch(key) or key == "/v5/trade/batch_orders":
        return [_htx_contract(_fields(o)) for o in _batch(v, top, "orders_data", "orders") or [{}]]
    return []


def _htx_spot(f: Fields) -> OrderFacts:
    symbol = f.symbol("symbol")
    if _unsure(f, "type"):
        return _sized(symbol, f.get("amount"), BOTH)
    # HTX: a buy-market order's amount is the quote to spend.
    return _sized(symbol, f.get("amount"), QUOTE if f.text("type") == "buy-market" else BASE)


def _htx_contract(f: Fields) -> OrderFacts:
    return _sized(f.symbol("contract_code") or f.symbol("symbol"), f.get("volume"), BASE)


_ORDERS: dict[str, Callable[[View], list[OrderFacts]]] = {
    **{name: _binance_like for name in BINANCE_IDS},
    "mexc": _mexc,
    "bybit": _bybit,
    "okx": _okx,
    "kucoin": _kucoin,
    "kucoinfutures": _kucoin,
    "bitget": _bitget,
    "kraken": _kraken,
    "bitfinex": _bitfinex,
    "gemini": _gemini,
    "coinbase": _coinbase,
    "bitstamp": _bitstamp,
    "cryptocom": _cryptocom,
    "deribit": _deribit,
    "gate": _gate,
    "htx": _htx,
}


def orders(v: View) -> tuple[OrderFacts, ...]:
    rule = _ORDERS.get(v.exchange)
    return tuple(rule(v)) if rule else ()

