"""signing-agent: exchange secrets stay inside a PKCS#11 token; bots get signed requests.

Modules, meeting at small interfaces (after tmkms' keyring / chain rules / session):
  config    the TOML file: which module, token, PIN source, where to listen
  custody   the keyring: keys as non-extractable token objects, MACs computed in the token
            (a package: errors, objects, session, keyring, provision)
  names     what key labels, bot names and API key ids may be (no custody needed to check one)
  exchanges one folder per exchange family (scheme, rules, template, ccxt bridge) and the registry
            of complete records; schemes is their shared basis (request types, encodings)
  rules     the shared engines that read a request, for the policy, from the exchange's record
  service   the gRPC Signer service: ties a request, its key and its scheme together
  server    serving: Unix socket (default) or loopback TCP, logs, signals
  client    the Python client bots use (and the CLI's `sign`)
"""

__version__ = "0.1.0"
