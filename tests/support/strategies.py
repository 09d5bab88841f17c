"""Hypothesis strategies the per-exchange property tests share (tests/unit/exchanges): parameter names
and values as bots send them, against ccxt's own sign()."""

from __future__ import annotations

from hypothesis import strategies as st

IDENTIFIER = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
# Names as exchanges spell them (Binance-style identifiers)
IDENTIFIERS = st.text(st.sampled_from(IDENTIFIER), min_size=1, max_size=12)
# Any name a user could type that prints (no control characters)
PRINTABLE_NAMES = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(str.isprintable)
# Names without separators, invisible or unassigned characters
VISIBLE_NAMES = st.text(st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Zs")),
                        min_size=1, max_size=12)
# Values: anything a user could type, non-ASCII included (no lone surrogates: not text)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
