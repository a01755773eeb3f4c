"""The checked-in generated code matches policy.proto (CI regenerates and diffs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("policy_pb2.py", "policy_pb2.pyi", "policy_pb2_grpc.py")


def test_regenerated_code_matches_checked_in(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    if shutil.which("bash") is None:  # pragma: no cover
        pytest.skip("bash not available")
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
                   check=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
                   timeout=120)
    for name in GENERATED:
        fresh = (tmp_path / "tailwise" / "wire" / "v1" / name).read_text()
        checked_in = (ROOT / "wire" / "v1" / name).read_text()
        assert fresh == checked_in, (
            f"wire/v1/{name} is stale: run scripts/gen_proto.sh and commit the result")


def test_typed_bindings_match_generated_services() -> None:
    """tailwise.wire.rpc binds the same method paths and message types as the generated stubs."""
    pytest.importorskip("grpc")
    from tailwise.wire import rpc
    from tailwise.wire.v1 import policy_pb2 as pb

    svc = pb.DESCRIPTOR.services_by_name
    expect = {
        rpc.SUBSCRIBE: ("PolicyService", "Subscribe", "Ack", "PolicyUpdate", True, True),
        rpc.SET_POLICY: ("PolicyService", "SetPolicy", "SetPolicyRequest", "SetPolicyResponse",
                         False, False),
        rpc.GET_POLICY: ("PolicyService", "GetPolicy", "GetPolicyRequest", "PolicyUpdate",
                         False, False),
        rpc.GET_STATUS: ("PolicyService", "GetStatus", "GetStatusRequest", "LearnerStatus",
                         False, False),
        rpc.REPORT: ("TelemetryService", "Report", "EngineEvent", "Summary", True, False),
        rpc.GET_HINTS: ("HintService", "GetHints", "GetHintsRequest", "HintsResponse",
                        False, False),
    }
    n_methods = sum(len(s.methods) for s in svc.values())
    assert n_methods == len(expect)
    for path, (service, method, req, resp, cs, ss) in expect.items():
        m = svc[service].methods_by_name[method]
        assert path == f"/{svc[service].full_name}/{m.name}"
        assert (m.input_type.name, m.output_type.name) == (req, resp)
        assert (m.client_streaming, m.server_streaming) == (cs, ss)
    generated = (ROOT / "wire" / "v1" / "policy_pb2_grpc.py").read_text()
    for path in expect:
        assert f"'{path}'" in generated
