"""One module per ccxt exchange id: PLACEHOLDER credentials and `unsign(exchange, built, api)`.

`unsign` receives what ccxt's own sign() returned with the placeholder
credentials ({url, method, body, headers}) and returns an `Unsigned` (the
request without its authentication) or None for a public request.
"""
