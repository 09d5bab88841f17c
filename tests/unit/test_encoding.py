"""ccxt's urlencode as the schemes compute it: a list of unreserved texts is joined unquoted in one
step, and must give the bytes quoting each name and value gives (quote(text, safe=''))."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from agent.schemes.encoding import urlencode

# Unreserved characters, and the ones that must be quoted (reserved, space, '%', non-ASCII, a lone surrogate's
# neighbours in the BMP), mixed so that most lists take one path and many the other.
TEXT = st.text(alphabet=st.sampled_from("aZ09_.~-=&+ /%?#é☃中"), max_size=6)


@given(st.lists(st.tuples(TEXT.filter(bool), TEXT), max_size=6))
def test_urlencode_is_each_text_quoted_then_joined(params: list[tuple[str, str]]):
    expected = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)
    assert urlencode(params) == expected
    assert urlencode(iter(params)) == expected  # any iterable, read once
    assert urlencode(tuple(params)) == expected
