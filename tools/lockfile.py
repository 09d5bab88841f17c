"""uv.lock helpers for the Makefile and the tests (standard library, plus `packaging` for `check`).

  python3 tools/lockfile.py uv-requirement   the locked uv as a pip requirement with its hashes, so
                                             that pip installs the tool itself hash-verified (make deps)
  python tools/lockfile.py check             does uv.lock still describe pyproject.toml? (CI; exit 1 if not)
  python3 tools/lockfile.py digest           the SHA-256 of uv.lock (what --version and the audit name)

`check` does not resolve anything (no network): it compares. uv.lock records, under the project's
own [package.metadata], every requirement of pyproject.toml as it was when the lock was written
(requires-dist: runtime and extras; requires-dev: the dependency groups). Those must equal
pyproject.toml's now (an edit of pyproject.toml without `make lock` is drift), and every package
pyproject.toml names must be locked at versions inside its range. uv's own `uv lock --check`
(make lock-check) says the same from the resolver's side.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "signing-agent"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def load(root: Path = ROOT) -> tuple[dict, dict]:
    return (tomllib.loads((root / "pyproject.toml").read_text()),
            tomllib.loads((root / "uv.lock").read_text()))


def locked_packages(lock: dict) -> dict[str, list[dict]]:
    """name -> its [[package]] entries (a universal lock may hold two versions, split by markers)."""
    out: dict[str, list[dict]] = {}
    for pkg in lock.get("package", []):
        out.setdefault(_norm(pkg["name"]), []).append(pkg)
    return out


def uv_requirement(lock: dict) -> str:
    (uv,) = locked_packages(lock)["uv"]
    hashes = [w["hash"] for w in uv.get("wheels", [])]
    if not hashes:
        raise SystemExit("uv.lock has no wheel hashes for uv")
    return f"uv=={uv['version']} " + " ".join(f"--hash={h}" for h in hashes)


def _canonical(name: str, specifier: str, marker: str) -> tuple[str, str, str]:
    from packaging.specifiers import SpecifierSet

    return _norm(name), ",".join(sorted(str(s) for s in SpecifierSet(specifier))), marker.strip()


def _split_extra(marker: str) -> tuple[str, str]:
    """uv's marker of a requirement -> (its extra or "", the rest of the marker)."""
    clauses = [c.strip() for c in marker.split(" and ")] if marker else []
    extras = [m[1] for c in clauses if (m := re.fullmatch(r"extra == '([^']+)'", c))]
    rest = [c for c in clauses if not re.fullmatch(r"extra == '([^']+)'", c)]
    return (extras[0] if extras else ""), " and ".join(rest)


def check(root: Path = ROOT) -> list[str]:
    """Ways uv.lock disagrees with pyproject.toml (empty: it matches)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject, lock = load(root)
    project = pyproject["project"]
    packages = locked_packages(lock)
    if PROJECT not in packages:
        return [f"uv.lock has no entry for {PROJECT}: run `make lock`"]
    meta = packages[PROJECT][0].get("metadata", {})

    # Section ("runtime", "extra NAME", "group NAME") -> requirements, as pyproject.toml states them now ...
    wanted: dict[str, list[Requirement]] = {"runtime": [Requirement(r) for r in project.get("dependencies", [])]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        wanted[f"extra {extra}"] = [Requirement(r) for r in reqs]
    for group, reqs in pyproject.get("dependency-groups", {}).items():
        wanted[f"group {group}"] = [Requirement(r) for r in reqs]
    want = {(section, *_canonical(r.name, str(r.specifier), str(r.marker or "")))
            for section, reqs in wanted.items() for r in reqs}
    # ... and as uv.lock recorded them when it was written.
    have = set()
    for e in meta.get("requires-dist", []):
        extra, marker = _split_extra(e.get("marker", ""))
        have.add((f"extra {extra}" if extra else "runtime", *_canonical(e["name"], e.get("specifier", ""), marker)))
    for group, entries in meta.get("requires-dev", {}).items():
        for e in entries:
            have.add((f"group {group}", *_canonical(e["name"], e.get("specifier", ""), e.get("marker", ""))))

    def show(item: tuple[str, str, str, str]) -> str:
        section, name, spec, marker = item
        return f"{name}{spec}" + (f" ; {marker}" if marker else "") + f" ({section})"

    problems = [f"pyproject.toml requires {show(i)}, which uv.lock does not record: run `make lock`"
                for i in sorted(want - have)]
    problems += [f"uv.lock records {show(i)}, which pyproject.toml no longer requires: run `make lock`"
                 for i in sorted(have - want)]
    if lock.get("requires-python") != project.get("requires-python"):
        problems.append(f"requires-python: pyproject.toml {project.get('requires-python')!r}, uv.lock "
                        f"{lock.get('requires-python')!r}: run `make lock`")

    # Every package pyproject.toml names is locked, at versions inside its range.
    for section, reqs in wanted.items():
        for r in reqs:
            entries = packages.get(_norm(r.name))
            if not entries:
                problems.append(f"{r} ({section}) is not in uv.lock: run `make lock`")
                continue
            for e in entries:
                if not r.specifier.contains(Version(e["version"]), prereleases=True):
                    problems.append(f"uv.lock has {e['name']} {e['version']}, outside {r} ({section}): run `make lock`")
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "uv-requirement":
        print(uv_requirement(load()[1]))
    elif command == "digest":
        print(hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest())
    elif command == "check":
        problems = check()
        for p in problems:
            print(f"lock drift: {p}", file=sys.stderr)
        if problems:
            return 1
        print("uv.lock matches pyproject.toml")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
