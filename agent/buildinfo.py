"""Which code this is: the version, the git commit and the SHA-256 of the dependency lock (uv.lock).

`signing-agent --version` prints it, the agent logs it at start and writes it into the audit's
`agent.start` record, so that an incident can name the exact code that signed.

Where the values come from:
  * run from a git checkout (the editable install of `make run` / `make test`): read live, the
    commit from `git rev-parse HEAD` (with "-dirty" when tracked files differ from it) and the
    digest of the checkout's uv.lock;
  * installed from a wheel: baked in at build time (setup.py writes agent/_build_info.json into
    the wheel, from the same two sources, or from the sdist it was built from);
  * neither: "unknown".

Standard library only: setup.py imports this module at build time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from agent import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
BAKED_FILE = PACKAGE_DIR / "_build_info.json"
LOCK_NAME = "uv.lock"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class BuildInfo:
    version: str
    commit: str  # 40 hex digits, "-dirty" appended for uncommitted changes to tracked files; or "unknown"
    deps_sha256: str  # of uv.lock's bytes; or "unknown"
    source: str  # "checkout", "wheel" or "unknown": where commit and deps_sha256 were read

    def as_fields(self) -> dict[str, str]:
        """The fields of a log line or of the audit's agent.start record."""
        return asdict(self)

    def describe(self) -> str:
        where = {"checkout": f"read from the git checkout {PACKAGE_DIR.parent}",
                 "wheel": "recorded when the wheel was built",
                 "unknown": "neither a git checkout nor a wheel built from one"}[self.source]
        return (f"signing-agent {self.version}\n"
                f"commit: {self.commit}\n"
                f"dependencies: {LOCK_NAME} sha256:{self.deps_sha256}\n"
                f"({where})")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_commit(root: Path) -> str | None:
    """HEAD of the git work tree at ROOT ("-dirty" if tracked files changed), or None."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None  # ROOT is inside some other repository (a venv in a checkout, say)
        commit = git("rev-parse", "--verify", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def from_checkout(root: Path) -> dict[str, str] | None:
    """commit and deps_sha256 of the source tree at ROOT, when it is this project's git checkout."""
    lock = root / LOCK_NAME
    if not (root / "pyproject.toml").is_file() or not lock.is_file():
        return None
    commit = git_commit(root)
    if commit is None:
        return None
    return {"commit": commit, "deps_sha256": file_sha256(lock)}


def _from_baked() -> dict[str, str] | None:
    try:
        data = json.loads(BAKED_FILE.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("commit", "deps_sha256")):
        return None
    return {"commit": data["commit"], "deps_sha256": data["deps_sha256"]}


@functools.cache
def build_info() -> BuildInfo:
    checkout = from_checkout(PACKAGE_DIR.parent)
    if checkout is not None:
        return BuildInfo(__version__, source="checkout", **checkout)
    baked = _from_baked()
    if baked is not None:
        return BuildInfo(__version__, source="wheel", **baked)
    return BuildInfo(__version__, commit=UNKNOWN, deps_sha256=UNKNOWN, source="unknown")
