"""The one loader of tests/vectors/<exchange>.json: each exchange's reference cases, as data.

A vector file holds, for one exchange id of the registry (agent.exchanges.EXCHANGES):

  published   examples an exchange published (its documentation, its SDK's tests), each with its
              `source`: a request signed with the published key must give the published bytes
              ("request"), or the published key's MAC of a published text must be the published
              value ("mac"), or an exchange-specific check named by "check" (support.profiles)
  ccxt        ccxt calls (api, path, method, params) and the request the agent signs for each: the
              signed request must equal ccxt 4.5.90's own sign() with the same secret and instant;
              "key_types" lists the key types compared, "bridge" whether the ccxt bridge's round trip
              (placeholder ccxt -> unsign -> scheme) must give plain ccxt's request too; a case with
              "sign": false is checked through the bridge only
  public      ccxt public calls the bridge must leave alone
  refusals    requests the scheme refuses (RequestInvalid matching `match`), with no nonce spent

Requests are {"method", "path", "query": [[name, value], ...], "body": null | [[name, value], ...] |
{"raw": text}}. A very long string may be written as {"runs": [[text, count], ...]} (text repeated
count times, concatenated), so that a refusal of a 200,000-character body stays readable here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from agent.schemes import RawBody, UnsignedRequest
from support.leaks import register_secret

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KINDS = ("published", "ccxt", "public", "refusals")


def text(value) -> str:
    """A string of a vector file: as written, or {"runs": [[text, count], ...]}."""
    if isinstance(value, dict):
        return "".join(part * count for part, count in value["runs"])
    return value


def pairs(items) -> tuple[tuple[str, str], ...]:
    return tuple((text(name), text(value)) for name, value in items)


def request_of(data: dict) -> UnsignedRequest:
    body = data.get("body")
    if isinstance(body, dict):
        body = RawBody(text(body["raw"]))
    elif body is not None:
        body = pairs(body)
    return UnsignedRequest(text(data["method"]), text(data["path"]), query=pairs(data.get("query", ())), body=body)


@dataclass(frozen=True)
class Case:
    """One case of one exchange's vector file."""

    exchange: str
    kind: str
    index: int
    data: dict

    @property
    def id(self) -> str:
        return f"{self.exchange}-{self.data.get('name', self.index)}"

    def __getitem__(self, name: str):
        return self.data[name]

    def get(self, name: str, default=None):
        return self.data.get(name, default)

    @property
    def request(self) -> UnsignedRequest:
        return request_of(self.data["request"])


def files() -> dict[str, Path]:
    """Exchange id -> its vector file."""
    return {path.stem: path for path in sorted(VECTORS.glob("*.json"))}


@cache
def load(exchange_id: str) -> dict:
    """EXCHANGE_ID's vector file, its published secrets registered with the leak guard."""
    data = json.loads(files()[exchange_id].read_text())
    for case in data.get("published", ()):
        secret = case.get("key", {}).get("secret")
        if secret and len(secret) >= 16:  # shorter ones could match unrelated hex in an output
            register_secret(secret)
    return data


def cases(kind: str, exchanges=None) -> list[Case]:
    """Every case of KIND, of every vector file (or of EXCHANGES)."""
    chosen = exchanges if exchanges is not None else files()
    return [Case(exchange, kind, i, data) for exchange in chosen for i, data in enumerate(load(exchange).get(kind, ()))]


def params(kind: str, exchanges=None, where=lambda case: True) -> list:
    """pytest parameters for the cases of KIND (ids: exchange-name)."""
    return [pytest.param(case, id=case.id) for case in cases(kind, exchanges) if where(case)]
