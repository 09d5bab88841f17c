"""The committed gRPC code is exactly what `make proto` generates from proto/ (into the client package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "python" / "src" / "signing_agent_client" / "_proto"


def _generate():
    spec = importlib.util.spec_from_file_location("generate_proto", ROOT / "tools" / "generate_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def test_generated_code_is_reproducible_from_proto(tmp_path: Path):
    _generate()(tmp_path)
    names = ["signer_pb2.py", "signer_pb2.pyi", "signer_pb2_grpc.py"]
    for name in names:
        fresh = (tmp_path / "signing_agent_client" / "_proto" / name).read_bytes()
        assert fresh == (PACKAGE / name).read_bytes(), f"{name} is stale: run `make proto` and commit"
