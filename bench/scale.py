"""`make bench-scale`: wrapped keys at platform scale (issue 15's targets).

One SoftHSM2 token with its master key, and a key store filled with N wrapped HMAC keys (100,000 by
default; SCALE_KEYS=N to change): SQLite, then PostgreSQL (a throw-away cluster, as in the tests; its
figures go under "postgres" in the same file). Measured, and written to bench/results/scale.json:

  keyring (in one process, no gRPC): lookup + HMAC p50, warm (cached session object) and cold (a row read
      and an unwrap), in a store of 1 key and in the store of N keys; the ratios N-vs-1;
  the agent process: start time and memory (VmRSS) with N keys, and sign p50 through gRPC, warm and cold;
  the token's object count with N keys (the target: a handful);
  throughput of 1, 2 and 3 agent processes (replicas on one token and one store), and per busy core.

The keys are written with `Keyring.wrap_hmac_secrets` and `store.add_many` (one token call and one
transaction per batch), not N `keys import` runs: an import's self-test and per-key commit would make the
fill, not the agent, what is measured. A sample of the filled keys is checked by signing.

    python -m bench.scale [--keys N] [--seconds S] [--store sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.deploy import API_KEY, ROOT, AgentProcess, Deployment

RESULTS = ROOT / "bench" / "results"
PREFIX = "w"
BATCH = 5000
ROUNDS = 5


def _store_table(spec: str) -> str:
    """The [store] table for SPEC: "sqlite:PATH" or "postgres:DSN"."""
    backend, _, where = spec.partition(":")
    if backend == "postgres":
        return f'[store]\nbackend = "postgres"\ndsn = "{where}"\n'
    return f'[store]\nbackend = "sqlite"\nsqlite_file = "{where}"\n'


def _open_store(spec: str):
    from agent.custody.store import PostgresKeyStore, SqliteKeyStore

    backend, _, where = spec.partition(":")
    return PostgresKeyStore(where) if backend == "postgres" else SqliteKeyStore(Path(where))


# -- in a child process (the module loads once per process) --------------------------------------


def fill(config: Path, spec: str, count: int) -> dict[str, Any]:
    from agent.config import load_config
    from agent.custody import FINGERPRINT_MESSAGE, Keyring, fingerprint_of
    from agent.custody.store import WrappedRecord
    from agent.custody.objects import new_info

    cfg = load_config(config)
    store = _open_store(spec)
    t0 = time.perf_counter()
    samples: dict[str, str] = {}
    with Keyring.open(cfg.token, store=store) as keyring:
        for start in range(0, count, BATCH):
            labels = [f"{PREFIX}{i:06d}" for i in range(start, min(count, start + BATCH))]
            keys = [secrets.token_hex(32).encode() for _ in labels]
            generation, blobs = keyring.wrap_hmac_secrets(keys)
            records = []
            for label, key, blob in zip(labels, keys, blobs):
                info = new_info(label, "binance", API_KEY, "hmac",
                                fingerprint_of(hmac.new(key, FINGERPRINT_MESSAGE, hashlib.sha256).digest()), {}, None)
                records.append(WrappedRecord(label=label, exchange="binance", api_key=API_KEY, key_type="hmac",
                                             created=info.created, fingerprint=info.fingerprint, master=generation,
                                             blob=blob))
            store.add_many(records)
            samples[labels[0]] = hmac.new(keys[0], b"check", hashlib.sha256).hexdigest()
        fill_s = time.perf_counter() - t0
        for label, expected in samples.items():  # the filled blobs sign as their secrets do
            got = keyring.hmac(keyring.lookup(label), b"check", "sha256").hex()
            if got != expected:
                raise SystemExit(f"filled key {label} signs wrongly")
    store.close()
    return {"fill_s": round(fill_s, 1), "checked": len(samples)}


def probe(config: Path, small_spec: str, big_spec: str, count: int, repeat: int) -> dict[str, Any]:
    """Keyring-level p50s: warm and cold lookup+HMAC with 1 key and with COUNT keys; token object count."""
    from agent.config import load_config
    from agent.custody import Keyring

    message = b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&price=50000&timestamp=1763750000000"
    cfg = load_config(config)
    out: dict[str, Any] = {}
    with Keyring.open(cfg.token) as keyring:
        def sign(label: str) -> float:
            t0 = time.perf_counter_ns()
            keyring.hmac(keyring.lookup(label), message, "sha256")
            return (time.perf_counter_ns() - t0) / 1000

        for name, spec, labels in (("1", small_spec, [f"{PREFIX}000000"]),
                                   (str(count), big_spec, [f"{PREFIX}{i:06d}" for i in range(count)])):
            store = _open_store(spec)
            keyring.use_store(store)
            hot = labels[len(labels) // 2]
            sign(hot)
            warm = [sign(hot) for _ in range(repeat)]
            cold = []
            rng = random.Random(15)
            for label in (rng.sample(labels, min(repeat, len(labels))) if len(labels) > 1 else labels * repeat):
                keyring.use_store(store)  # forget every unwrapped object: the next lookup reads and unwraps
                cold.append(sign(label))
            out[f"warm_p50_us_{name}"] = round(statistics.median(warm), 1)
            out[f"cold_p50_us_{name}"] = round(statistics.median(cold), 1)
            keyring.use_store(None)
            store.close()
        with keyring.session() as session:
            out["token_objects"] = len(list(session.get_objects()))
    return out


# -- the driver ------------------------------------------------------------------------------------


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.scale", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.scale {args[0]} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _client(target: str, bearer: Path):
    from signing_agent_client.client import SignerClient

    return SignerClient(target, token_file=bearer)


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000"}


def agent_p50(target: str, bearer: Path, labels: list[str], repeat: int) -> tuple[float, float]:
    """(warm, cold) sign p50 in µs through gRPC: one key again and again; then keys never used before."""
    with _client(target, bearer) as client:
        def once(label: str) -> float:
            t0 = time.perf_counter_ns()
            client.sign(label, "POST", "/api/v3/order", body=ORDER)
            return (time.perf_counter_ns() - t0) / 1000

        for _ in range(50):
            once(labels[0])
        warm = [once(labels[0]) for _ in range(repeat)]
        cold = [once(label) for label in labels[1:]]
    return round(statistics.median(warm), 1), round(statistics.median(cold), 1)


def throughput(targets: list[str], bearer: Path, label: str, seconds: float, threads_per_target: int = 4) -> float:
    """Signatures per second over TARGETS (a closed loop of client threads per agent)."""
    stop = time.monotonic() + seconds
    counts: list[int] = []
    lock = threading.Lock()

    def run(target: str) -> None:
        n = 0
        with _client(target, bearer) as client:
            while time.monotonic() < stop:
                client.sign(label, "POST", "/api/v3/order", body=ORDER)
                n += 1
        with lock:
            counts.append(n)

    workers = [threading.Thread(target=run, args=(t,)) for t in targets for _ in range(threads_per_target)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return round(sum(counts) / (time.monotonic() - t0), 1)


def cpu_busy() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = list(map(int, fields))
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def run(keys: int, seconds: float, repeat: int, backend: str = "sqlite") -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    cluster = None
    try:
        if backend == "postgres":
            # A throw-away cluster, as the tests start one (tests/support/pg.py: Debian's server binaries).
            sys.path.insert(0, str(ROOT / "tests"))
            from support.pg import start_cluster

            cluster = start_cluster()
            big, small_spec = f"postgres:{cluster.new_database()}", f"postgres:{cluster.new_database()}"
        else:
            big, small_spec = f"sqlite:{base / 'scale' / 'state' / 'keys.db'}", f"sqlite:{base / 'scale' / 'state' / 'small.db'}"
        return _run(base, keys, seconds, repeat, backend, big, small_spec)
    finally:
        if cluster is not None:
            from support.pg import remove_cluster

            remove_cluster(cluster)


def _run(base: Path, keys: int, seconds: float, repeat: int, backend: str, big: str, small_spec: str) -> dict[str, Any]:
    d = Deployment.create(base, "scale")
    assert d.bearer_file is not None
    config_text = d.config.read_text()
    d.config.write_text(config_text + _store_table(big))
    d.cli("store", "init")
    small = d.root / "small.toml"
    small.write_text(config_text.replace('socket = "run/agent.sock"', 'socket = "run/small.sock"')
                     + _store_table(small_spec))
    if backend == "postgres":  # bot credentials live in each database then (agent.bots_db): the bench bot's too
        d.cli("bots", "import-file")
        d.cli("--config", str(small), "bots", "import-file")
    result: dict[str, Any] = {"keys": keys, "machine_cores": os.cpu_count(), "store": backend}
    result["fill_1"] = _child("fill", str(small), small_spec, "1")
    print(f"filling {keys} wrapped keys ({backend}) ...", file=sys.stderr)
    result["fill"] = _child("fill", str(d.config), big, str(keys))
    print(f"filled in {result['fill']['fill_s']} s; probing the keyring ...", file=sys.stderr)
    kr = _child("probe", str(d.config), small_spec, big, str(keys), str(repeat))
    result["keyring"] = kr
    result["token_objects"] = kr["token_objects"]
    result["keys_100k_vs_1_warm_p50"] = round(kr[f"warm_p50_us_{keys}"] / kr["warm_p50_us_1"], 3)
    result["keys_100k_vs_1_cold_p50"] = round(kr[f"cold_p50_us_{keys}"] / kr["cold_p50_us_1"], 3)
    result["cold_vs_warm_p50"] = round(kr[f"cold_p50_us_{keys}"] / kr[f"warm_p50_us_{keys}"], 2)

    # The agent process: start with N keys, p50 through gRPC, memory.
    agents = []
    try:
        one = AgentProcess(d).start()
        agents.append(one)
        result["agent_start_s"] = round(one.startup_s, 2)
        target = f"unix:{d.socket}"
        small_agent = AgentProcess(d, config=small).start()
        agents.append(small_agent)
        result["agent_start_s_1"] = round(small_agent.startup_s, 2)
        # Rounds alternate between the agent with N keys and the one with 1 key (the machine is shared: a
        # burst of other work then hits both), each round on keys not used before; medians of the rounds.
        rounds: dict[str, list[float]] = {"warm": [], "cold": [], "warm1": []}
        per_round = max(1, repeat // ROUNDS)
        step = max(1, keys // (ROUNDS * (per_round + 1) + 1))
        fresh = iter(f"{PREFIX}{i:06d}" for i in range(step, keys, step))
        for _ in range(ROUNDS):
            labels = [f"{PREFIX}000000"] + [next(fresh) for _ in range(per_round)]
            warm, cold = agent_p50(target, d.bearer_file, labels, per_round)
            rounds["warm"].append(warm)
            rounds["cold"].append(cold)
            rounds["warm1"].append(agent_p50(f"unix:{small_agent.socket}", d.bearer_file,
                                             [f"{PREFIX}000000"] * 2, per_round)[0])
        warm, cold, warm1 = (round(statistics.median(rounds[k]), 1) for k in ("warm", "cold", "warm1"))
        result["agent_warm_p50_us"], result["agent_cold_p50_us"], result["agent_warm_p50_us_1"] = warm, cold, warm1
        result["agent_keys_100k_vs_1_warm_p50"] = round(warm / warm1, 3)
        result["agent_cold_vs_warm_p50"] = round(cold / warm, 2)
        result["agent_rss_mb"] = _rss_mb(one.pid)
        small_agent.stop()
        agents.remove(small_agent)

        # Replicas: 1, 2, 3 agent processes on the same token and store.
        replicas = [one]
        for i in (2, 3):
            replicas.append(AgentProcess(d, config=d.variant(f"replica{i}")).start())
        agents.extend(replicas[1:])
        tput: dict[str, Any] = {}
        for n in (1, 2, 3):
            busy0, t0 = cpu_busy(), time.monotonic()
            tput[str(n)] = throughput([f"unix:{a.socket}" for a in replicas[:n]], d.bearer_file, f"{PREFIX}000000",
                                      seconds)
            tput[f"{n}_busy_cores"] = round((cpu_busy() - busy0) / (time.monotonic() - t0), 2)
            tput[f"{n}_per_busy_core"] = round(tput[str(n)] / max(tput[f"{n}_busy_cores"], 0.01), 1)
        result["throughput"] = tput
        result["replicas_3_vs_1_throughput"] = round(tput["3"] / tput["1"], 2)
    finally:
        for a in agents:
            a.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "fill":
        print(json.dumps(fill(Path(argv[1]), argv[2], int(argv[3]))))
        return 0
    if argv and argv[0] == "probe":
        print(json.dumps(probe(Path(argv[1]), argv[2], argv[3], int(argv[4]), int(argv[5]))))
        return 0
    parser = argparse.ArgumentParser(prog="bench.scale")
    parser.add_argument("--keys", type=int, default=int(os.environ.get("SCALE_KEYS", "100000")))
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput case")
    parser.add_argument("--repeat", type=int, default=400, help="samples per p50")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    results = {backend: run(args.keys, args.seconds, args.repeat, backend) for backend in backends}
    result = results["sqlite"] if len(results) == 1 and "sqlite" in results else {**results.get("sqlite", {})}
    if "postgres" in results:
        result["postgres"] = results["postgres"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {RESULTS / 'scale.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
