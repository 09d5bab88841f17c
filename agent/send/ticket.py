"""What the service checks and fixes about delivery once the key's exchange is known (before the rules).

Sign: refused (rule `delivery`) for a key the policy sends only, or whose exchange would leave
unsigned what the key's policy restricts (a policy that says so is refused when it is loaded; this
catches a key imported later, or one that takes the `[keys."*"]` table), or for a request whose signed
bytes verify as another request (agent.delivery.RELABELLED: Bitstamp GETs).
Send: refused for a sign-only key; refused (rule `rate:exchange`) while the exchange says a budget
covering it is spent (agent.send.exchange_limits); the host is resolved (NoHost: FAILED_PRECONDITION before anything
is signed); an order on an exchange that takes a client order id gets one (the bot's, kept, or a new
one), before the rules read the request, so the policy and the audit see what is sent; a bot's id of a
form the exchange does not take is INVALID_ARGUMENT (agent.send.orders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.delivery import SEND, SIGN, relabelled_problem, unbound_problem
from agent.freeze import is_cancel
from agent.policy import RESOURCE_EXHAUSTED, Refusal
from agent.rules.forbidden import is_read
from agent.rules.view import view
from agent.send import hosts, orders

if TYPE_CHECKING:
    from agent.custody.keyring import KeyEntry
    from agent.send.exchange_limits import Holds
    from agent.exchanges.record import Exchange
    from agent.policy import KeyPolicy
    from signing_agent_client.request import UnsignedRequest


@dataclass
class Ticket:
    rpc: str  # SIGN or SEND: the call being decided
    # SEND: the exchange's spent budgets (agent.send.exchange_limits.Holds, the sender's)
    holds: "Holds | None" = field(default=None, repr=False)
    # Set by admit() on a Send call, for the sender:
    exchange: "Exchange | None" = None
    entry: "KeyEntry | None" = None
    request: "UnsignedRequest | None" = None
    base_url: str = ""
    client_id: str | None = None
    client_ids: orders.ClientIds | None = field(default=None, repr=False)

    def admit(self, key_policy: "KeyPolicy", exchange: "Exchange", entry: "KeyEntry",
              request: "UnsignedRequest") -> "UnsignedRequest":
        """REQUEST as it will be decided and signed; Refusal (rule `delivery`) when this call may not have it."""
        label = key_policy.label
        if self.rpc == SIGN:
            if key_policy.delivery == SEND:
                raise Refusal("delivery", f"key {label!r} is sent by the agent only (delivery = \"send\"): call Send, "
                                          "which places the request and returns the exchange's answer")
            problem = (unbound_problem(key_policy, exchange.id, entry.info.key_type)
                       or relabelled_problem(exchange.id, request.method, label))
            if problem is not None:
                raise Refusal("delivery", problem)
            return request
        if key_policy.delivery == SIGN:
            raise Refusal("delivery", f"key {label!r} is sign-only (delivery = \"sign\"): call Sign, or ask the "
                                      "operator for delivery = \"send\" (or \"both\") in its policy")
        self.base_url = hosts.base_url(exchange.id, key_policy.send_to, request.path, entry.info.options)
        if self.holds is not None:
            parsed = view(exchange, request)
            left, limit = self.holds.left(exchange.id, label, self.base_url, request.method, request.path,
                                          order=not (is_read(parsed) or is_cancel(parsed)))
            if left > 0:
                raise Refusal("rate:exchange", f"{exchange.name} said {limit} is spent: the agent holds this Send on "
                                               f"key {label!r} for {left:.1f} s more, so that the exchange does not ban "
                                               "it; send again after that", RESOURCE_EXHAUSTED)
        rules = orders.for_request(exchange.id, request)
        if rules is not None:
            given = orders.param(request, rules.param)
            if given is not None:
                self.client_id = rules.checked(exchange.name, given)
            else:
                made = rules.make()
                request = orders.with_param(request, rules.param, made).validated()
                # A body the id cannot be added to (a batch of several orders) goes as it is, unreconciled.
                self.client_id = made if orders.param(request, rules.param) == made else None
            self.client_ids = rules if self.client_id is not None else None
        self.exchange, self.entry, self.request = exchange, entry, request
        return request
