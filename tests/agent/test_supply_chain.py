"""Installs: uv.lock matches pyproject.toml, every install is hash-verified (a tampered hash is refused),
`--version`, the start log and the audit name the code, `make sbom` lists what is installed,
`make audit-deps` says when it could not check, and the wheel installed from the lock into a
fresh venv signs (marked `shipped`: about a minute).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker

from agent.audit import verify
from agent.buildinfo import build_info
from support.deploy import ROOT, make_env, run_cli, start_agent
from support.leaks import new_secret

TOOLS = ROOT / ".tools"
UV = TOOLS / "bin" / "uv"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"sa_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lockfile = _load("lockfile")
audit_deps = _load("audit_deps")


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without the parent make's flags (a nested make must not inherit -j, -s...)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


def make(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True,
                          env=_env(**env), timeout=timeout)


def run(*args: object, timeout: float = 600, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=_env(**env), timeout=timeout,
                          cwd=cwd)


def uv(*args: object, **kw) -> subprocess.CompletedProcess:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: `make test` (make deps) installs it from uv.lock")
    return run(UV, *args, **kw)


def fresh_venv(path: Path) -> Path:
    """A new venv with pip (the standard library's, no project code): its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120)
    return path / "bin" / "python"


def project_copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    # the workspace member (the bot-side package), without build output
    shutil.copytree(ROOT / "clients", tmp_path / "clients", ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                        "__pycache__"))
    return tmp_path


def locked_wheel_hash(lock_text: str, name: str) -> str:
    """The sha256 of NAME's (only) py3-none-any wheel in uv.lock."""
    (entry,) = [p for p in tomllib.loads(lock_text)["package"] if p["name"] == name]
    (wheel,) = [w for w in entry["wheels"] if w["url"].endswith("-py3-none-any.whl")]
    return wheel["hash"].removeprefix("sha256:")


def tampered(digest: str) -> str:
    return ("1" if digest[0] == "0" else "0") + digest[1:]


def installed(python: Path) -> dict[str, str]:
    """Normalized name -> version of every distribution installed where PYTHON looks."""
    out = run(python, "-c", "import importlib.metadata as m, json; "
              "print(json.dumps([(d.metadata['Name'], d.version) for d in m.distributions()]))", cwd=Path("/"))
    assert out.returncode == 0, out.stderr
    return {lockfile._norm(n): v for n, v in json.loads(out.stdout)}


def locked_versions() -> dict[str, set[str]]:
    return {name: {e["version"] for e in entries}
            for name, entries in lockfile.locked_packages(lockfile.load()[1]).items()}


# -- the lock and pyproject.toml agree ---------------------------------------------------------------


def test_lock_matches_pyproject():
    assert lockfile.check() == []


def test_uv_agrees_the_lock_is_fresh(tmp_path: Path):
    proc = uv("lock", "--check", "--offline", cwd=project_copy(tmp_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("edit, complaint", [
    # a range the locked version no longer fits
    (('"structlog>=24.1"', '"structlog>=99"'), "outside structlog>=99"),
    # a range it still fits: the lock recorded the old one, so it is stale all the same
    (('"structlog>=24.1"', '"structlog>=24.2"'), "structlog>=24.2 (runtime), which uv.lock does not record"),
    # a new dependency
    (('"pytest>=8",', '"pytest>=8", "six>=1.16",'), "six>=1.16 (extra dev)"),
    # one removed from a dependency group
    (('"pip-audit>=2.10"', ''), "pip-audit>=2.10 (group tools), which pyproject.toml no longer requires"),
])
def test_drift_between_pyproject_and_lock_is_caught(tmp_path: Path, edit: tuple[str, str], complaint: str):
    root = project_copy(tmp_path)
    text = (root / "pyproject.toml").read_text()
    assert edit[0] in text
    (root / "pyproject.toml").write_text(text.replace(edit[0], edit[1], 1).replace(', ]', ']'))
    problems = lockfile.check(root)
    assert any(complaint in p for p in problems), problems
    # uv sees it too (CI: make lock-check; make deps installs with --locked)
    assert uv("lock", "--check", "--offline", cwd=root).returncode != 0


# -- installs are verified by hash -------------------------------------------------------------------


def test_pip_refuses_a_tampered_hash(tmp_path: Path):
    """The shipped install (pip --require-hashes, wheels only) of one locked package, with one hash changed."""
    export = uv("export", "--locked", "--quiet", "--no-default-groups", "--no-emit-project",
                "--format", "requirements-txt", cwd=ROOT)
    assert export.returncode == 0, export.stderr
    (block,) = re.findall(r"^structlog==.*?(?=^\S|\Z)", export.stdout, flags=re.M | re.S)
    wheel_hash = locked_wheel_hash((ROOT / "uv.lock").read_text(), "structlog")
    assert f"--hash=sha256:{wheel_hash}" in block
    python = fresh_venv(tmp_path / "venv")
    pip = [python, "-m", "pip", "install", "--require-hashes", "--only-binary", ":all:", "--no-deps",
           "--no-cache-dir", "-r"]

    bad = tmp_path / "tampered.txt"
    bad.write_text(block.replace(wheel_hash, tampered(wheel_hash)))
    proc = run(*pip, bad)
    assert proc.returncode != 0
    assert "DO NOT MATCH THE HASHES" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "structlog" not in installed(python)

    good = tmp_path / "locked.txt"
    good.write_text(block)
    proc = run(*pip, good)
    assert proc.returncode == 0, proc.stderr
    assert "structlog" in installed(python)


def test_uv_refuses_a_tampered_hash(tmp_path: Path):
    """make deps' install (uv sync from uv.lock) with one hash of the lock changed."""
    root = project_copy(tmp_path)
    lock = (root / "uv.lock").read_text()
    wheel_hash = locked_wheel_hash(lock, "structlog")
    (root / "uv.lock").write_text(lock.replace(wheel_hash, tampered(wheel_hash)))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    proc = uv("sync", "--frozen", "--no-install-project", cwd=root, UV_PROJECT_ENVIRONMENT=str(venv))
    assert proc.returncode != 0
    assert "Hash mismatch" in proc.stderr and "structlog" in proc.stderr, proc.stderr
    assert "structlog" not in installed(venv / "bin" / "python")


def test_the_dev_venv_is_exactly_the_locked_set():
    """make deps: .venv holds the agent, its dev extra and the build group, at their locked versions; nothing else."""
    export = uv("export", "--locked", "--quiet", "--extra", "dev", "--group", "build", "--no-emit-project",
                "--format", "requirements-txt", cwd=ROOT)
    assert export.returncode == 0, export.stderr
    wanted = {lockfile._norm(n): v for n, v, marker in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)(?: ; (.*?))? \\$",
                                                                   export.stdout, flags=re.M)
              if not marker or Marker(marker).evaluate()}  # this machine's share of the universal lock
    have = installed(ROOT / ".venv" / "bin" / "python")
    assert have.pop("signing-agent") == build_info().version
    # `make bench` adds its extra to the same venv; the test-only install must not miss anything locked.
    bench = {name for name in have if name not in wanted}
    locked = locked_versions()
    assert all(name in locked for name in bench), bench - set(locked)
    assert {n: v for n, v in have.items() if n in wanted} == wanted
    assert all(v in locked[n] for n, v in have.items())


# -- which code is this ------------------------------------------------------------------------------


def _checkout_commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


def test_version_names_the_commit_and_the_lock():
    proc = run(sys.executable, "-m", "agent", "--version", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lock_digest = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert proc.stdout.splitlines()[:3] == [f"signing-agent {version}", f"commit: {_checkout_commit()}",
                                            f"dependencies: uv.lock sha256:{lock_digest}"]
    assert "read from the git checkout" in proc.stdout
    assert build_info().source == "checkout"


def test_the_audit_start_line_names_the_code(env, agent):
    records = [json.loads(line) for line in (env.root / "state" / "audit.jsonl").read_text().splitlines()]
    (i,) = [i for i, r in enumerate(records) if r["event"] == "agent.start" and r["pid"] == agent.proc.pid]
    info = build_info()
    assert {k: records[i][k] for k in ("version", "commit", "deps_sha256", "source")} == info.as_fields()
    assert records[i + 1]["event"] == "policy.load"  # the first record of the process, then its policy
    assert verify(env.root / "state" / "audit.jsonl").ok
    (logged,) = [json.loads(line) for line in agent.log.read_text().splitlines() if '"agent.start"' in line]
    assert logged["commit"] == info.commit and logged["deps_sha256"] == info.deps_sha256


# -- SBOM and vulnerability audit ----------------------------------------------------------------------


def test_sbom_lists_every_installed_package(tmp_path: Path):
    sbom = tmp_path / "sbom.cdx.json"
    proc = make("sbom", f"SBOM={sbom}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(sbom.read_text())
    assert doc["bomFormat"] == "CycloneDX"
    root = doc["metadata"]["component"]
    assert (root["name"], root["version"]) == ("signing-agent", build_info().version)
    listed = {lockfile._norm(c["name"]): c["version"] for c in doc["components"]}
    listed[lockfile._norm(root["name"])] = root["version"]
    assert listed == installed(ROOT / ".venv" / "bin" / "python")
    locked = locked_versions()
    assert all(v in locked[n] for n, v in listed.items()), {n: v for n, v in listed.items() if v not in locked[n]}
    # Every component comes from PyPI, but the bot-side package, a workspace member of this repository.
    assert all(c.get("purl", "").startswith("pkg:pypi/") for c in doc["components"]
               if lockfile._norm(c["name"]) != "signing-agent-client")


def test_audit_deps_says_not_checked_when_the_service_is_unreachable():
    assert make(f"{TOOLS.name}/.installed").returncode == 0
    # Every request through a proxy that is not there: nothing can be looked up.
    proc = make("audit-deps", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT CHECKED" in proc.stdout


@pytest.mark.parametrize("returncode, report, stderr, status, says", [
    (1, {"dependencies": [{"name": "structlog", "version": "1.0", "vulns": [
        {"id": "PYSEC-0", "fix_versions": ["1.1"], "aliases": ["CVE-0"]}]},
        {"name": "grpcio", "version": "1.0", "vulns": []}]}, "", 1, "VULNERABLE: structlog 1.0: PYSEC-0"),
    (0, {"dependencies": [{"name": "grpcio", "version": "1.0", "vulns": []}]}, "", 0, "no known vulnerabilities"),
    (0, {"dependencies": [{"name": "grpcio", "skip_reason": "Dependency not found on PyPI"}]}, "", 0, "NOT CHECKED"),
    (1, None, "requests.exceptions.ConnectionError: ... Name or service not known", 0, "NOT CHECKED"),
    (1, None, "ValueError: something else", 2, "other than the network"),
])
def test_audit_deps_verdicts(returncode, report, stderr, status, says):
    got, lines = audit_deps.classify(returncode, report, stderr)
    assert got == status and says in "\n".join(lines)


# -- as shipped: the wheel, installed from the lock into a fresh venv ----------------------------------


@pytest.mark.shipped
@pytest.mark.e2e
def test_the_wheel_installed_from_the_lock_signs(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("shipped")
    dist = work / "dist"
    proc = make("wheel", f"DIST={dist}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("signing_agent-*.whl")
    (client_wheel,) = dist.glob("signing_agent_client-*.whl")  # the bot-side package the agent depends on

    # As the README tells an operator: the locked runtime set with pip alone, hashes required, then the wheel.
    python = fresh_venv(work / "venv")
    proc = run(python, "-m", "pip", "install", "--quiet", "--require-hashes", "--only-binary", ":all:",
               "-r", dist / "requirements.txt", cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel, client_wheel, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert run(python, "-m", "pip", "check", cwd=work).returncode == 0
    proc = run(python, "-c", "import agent; print(agent.__file__)", cwd=work)
    assert proc.stdout.strip().startswith(str(work / "venv")), proc.stdout  # not the checkout
    have = installed(python)
    locked = locked_versions()
    assert all(v in locked[n] for n, v in have.items() if n not in ("pip", "setuptools", "signing-agent", "signing-agent-client")), have

    script = work / "venv" / "bin" / "signing-agent"
    proc = run(script, "--version", cwd=work)
    assert proc.returncode == 0, proc.stderr
    info = build_info()
    assert f"commit: {info.commit}\n" in proc.stdout
    assert f"dependencies: uv.lock sha256:{info.deps_sha256}\n" in proc.stdout
    assert "recorded when the wheel was built" in proc.stdout

    # The installed agent on a fresh token: import a key, serve, sign one request as a bot would.
    env = make_env(tmp_path_factory, "shipped")
    command = (str(script),)
    secret = new_secret(64)
    run_cli(env, "keys", "import", "--label", "shipped", "--exchange", "binance", "--api-key", "AKID-shipped",
            stdin=secret + "\n", check=True, command=command)
    agent = start_agent(env, env.config, command=command)
    try:
        request = {"method": "GET", "path": "/api/v3/openOrders", "query": {"symbol": "BTCUSDT"}}
        out = run_cli(env, "sign", "--key", "shipped", stdin=json.dumps(request), check=True, command=command)
    finally:
        assert agent.stop() == 0, agent.log.read_text()
    signed = json.loads(out.stdout)
    query, _, signature = signed["path"].partition("?")[2].rpartition("&signature=")
    assert query.startswith("timestamp=") and query.endswith("&symbol=BTCUSDT")
    assert signature == hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    assert signed["headers"]["X-MBX-APIKEY"] == "AKID-shipped"

    records = [json.loads(line) for line in (env.root / "state" / "audit.jsonl").read_text().splitlines()]
    (i,) = [i for i, r in enumerate(records) if r["event"] == "agent.start"]  # after the CLI's key.import
    assert records[i]["source"] == "wheel" and records[i + 1]["event"] == "policy.load"
    assert (records[i]["commit"], records[i]["deps_sha256"]) == (info.commit, info.deps_sha256)
    assert [r["event"] for r in records if r["event"] == "sign"] == ["sign"]
