"""`make audit-deps`: pip-audit over the locked set (every package of uv.lock, exported with its hashes).

  python tools/audit_deps.py --pip-audit .tools/bin/pip-audit --requirements build/requirements-all.txt [-- ARGS]

ARGS go to pip-audit as they are (e.g. `-s osv` for OSV's database instead of PyPI's).

Exit status: 0 nothing known is vulnerable, OR the vulnerability data could not be reached (then
it says NOT CHECKED, loudly, and which packages it could not check); 1 it could check and found
known vulnerabilities (listed); 2 pip-audit itself failed for another reason (its message is shown).

Why a wrapper: pip-audit alone cannot be trusted to tell "no vulnerabilities" from "could not
look". Where PyPI's JSON API is filtered, it reports every package as "not found on PyPI", prints
"No known vulnerabilities found" and exits 0; where OSV cannot be reached it exits 1 with a
traceback, as it does for real findings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

NETWORK_ERRORS = ("ConnectionError", "NameResolutionError", "Max retries exceeded", "Name or service not known",
                  "Temporary failure in name resolution", "Connection refused", "ConnectTimeout", "ReadTimeout",
                  "timed out", "ProxyError", "SSLError", "Network is unreachable")


def classify(returncode: int, report: dict | None, stderr: str) -> tuple[int, list[str]]:
    """(exit status, lines to print) for one pip-audit run."""
    if report is None:
        if any(marker in stderr for marker in NETWORK_ERRORS):
            last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
            return 0, ["NOT CHECKED: pip-audit could not reach its vulnerability service from this machine:",
                       f"  {last[:400]}",
                       "Run `make audit-deps` where the service is reachable (see README, Installs)."]
        return 2, [f"pip-audit failed (exit {returncode}) for a reason other than the network:",
                   *[f"  {line}" for line in stderr.strip().splitlines()[-15:]]]
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    checked = len(deps) - len(skipped)
    lines = []
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions") or []) or "no fixed release yet"
            aliases = ", ".join(v.get("aliases") or [])
            lines.append(f"VULNERABLE: {d['name']} {d.get('version', '?')}: {v.get('id')}"
                         + (f" ({aliases})" if aliases else "") + f"; fixed in: {fixed}")
    if vulnerable:
        lines.append(f"{len(vulnerable)} of {checked} checked packages have known vulnerabilities: update them "
                     "(make lock UPGRADE=<package>) or record why not")
        if skipped:
            lines.append(f"({len(skipped)} packages could not be checked)")
        return 1, lines
    if checked == 0:
        reasons = sorted({d["skip_reason"] for d in skipped})
        return 0, ["NOT CHECKED: the vulnerability service answered for none of the "
                   f"{len(skipped)} locked packages (pip-audit's own verdict would have been "
                   "'No known vulnerabilities found'). First reason:",
                   f"  {reasons[0] if reasons else '?'}",
                   "Run `make audit-deps` where the service is reachable (see README, Installs)."]
    lines.append(f"no known vulnerabilities in the {checked} checked packages of the lock")
    if skipped:
        lines.append(f"WARNING: {len(skipped)} packages could not be checked: "
                     + ", ".join(f"{d['name']}" for d in skipped))
    return 0, lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-audit", required=True, help="the pip-audit executable")
    parser.add_argument("--requirements", required=True, type=Path, help="hashed requirements of the locked set")
    parser.add_argument("args", nargs="*", help="more pip-audit arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [args.pip_audit, "--requirement", str(args.requirements), "--require-hashes", "--disable-pip",
               "--progress-spinner", "off", "--format", "json", "--output", str(out), *args.args]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        report = None
        if out.exists() and out.stat().st_size:
            try:
                report = json.loads(out.read_text())
            except ValueError:
                report = None
    status, lines = classify(proc.returncode, report, proc.stderr)
    print("\n".join(lines), file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
