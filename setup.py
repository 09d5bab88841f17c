"""Build hook only (the metadata is in pyproject.toml): bakes which code this is into the package.

The wheel gets agent/_build_info.json: the git commit it was built from and the SHA-256 of
uv.lock, so that an installed agent (no checkout around it) can still name both in
`signing-agent --version`, its start log line and its audit (see agent/buildinfo.py). An sdist
carries the same file, for wheels built from it where there is no git.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from agent.buildinfo import BAKED_FILE, UNKNOWN, from_checkout  # noqa: E402 (standard library only)


def _info() -> dict[str, str]:
    info = from_checkout(ROOT)
    if info is None and BAKED_FILE.is_file():  # building from an sdist
        info = json.loads(BAKED_FILE.read_text())
    return info or {"commit": UNKNOWN, "deps_sha256": UNKNOWN}


def _write(package_dir: Path) -> None:
    package_dir.mkdir(parents=True, exist_ok=True)
    (package_dir / BAKED_FILE.name).write_text(json.dumps(_info(), indent=1) + "\n")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the checkout itself
            _write(Path(self.build_lib) / "agent")


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _write(Path(base_dir) / "agent")


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
