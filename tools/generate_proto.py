"""Regenerate the gRPC code of the bot-side package from proto/ (`make proto`).

The generated modules live in the client package (clients/python/src/signing_agent_client/_proto/),
the one place both the bots and the agent import them from (the agent depends on the client
package). The .proto file is mapped onto that import path, so the generated modules import each
other as `signing_agent_client._proto...` and need no sys.path tricks. A test checks that the
committed files are exactly what this writes (tests/unit/test_proto.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = ROOT / "clients" / "python" / "src"
IMPORT_DIR = "signing_agent_client/_proto"
PROTO = "signing_agent/v1/signer.proto"


def generate(out_dir: Path) -> None:
    """Write signer_pb2.py, signer_pb2.pyi and signer_pb2_grpc.py under OUT_DIR/signing_agent_client/_proto/."""
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{IMPORT_DIR}={ROOT / 'proto' / 'signing_agent' / 'v1'}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"{IMPORT_DIR}/signer.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_ROOT)
