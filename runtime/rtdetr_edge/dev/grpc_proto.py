"""Compile the Open Inference Protocol's ``.proto`` into the descriptor set the server ships
(``make proto``; needs grpcio-tools, a test dependency). The server reads only the ``.binpb``:
the test that compiles the ``.proto`` again and compares catches an edit to one without the other.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[1] / "server" / "proto"
PROTO = PROTO_DIR / "grpc_predict_v2.proto"
DESCRIPTOR_SET = PROTO_DIR / "grpc_predict_v2.binpb"


def compile_descriptor_set(proto: Path = PROTO) -> bytes:
    """The serialized ``FileDescriptorSet`` protoc makes of ``proto`` (named by its file name).

    protoc runs in its own process: grpc_tools' compiler carries a C++ protobuf that aborts a
    process importing Paddle after it (a pthread mutex assertion in paddle.base.core, measured)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.binpb"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", proto.name]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"protoc failed on {proto} (exit {done.returncode}): {done.stderr.strip()}")
        return out.read_bytes()


def main() -> None:
    data = compile_descriptor_set()
    staged = DESCRIPTOR_SET.with_suffix(".binpb.tmp")
    staged.write_bytes(data)
    staged.replace(DESCRIPTOR_SET)
    print(f"wrote {DESCRIPTOR_SET} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
