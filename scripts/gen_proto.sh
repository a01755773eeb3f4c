#!/usr/bin/env bash
# Regenerate the checked-in protobuf/gRPC modules from wire/v1/policy.proto.
# The file is compiled as tailwise/wire/v1/policy.proto (through the tailwise/wire link to
# wire/, with the repo root as -I), so the generated imports read tailwise.wire.v1.policy_pb2.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (OUT_DIR defaults to the repo root)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT}"
PY="${PYTHON:-python}"
cd "$ROOT"
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I. \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  tailwise/wire/v1/policy.proto
# protoc's --pyi_out writes bare `Mapping` in __init__ signatures, which `mypy --strict`
# reports (type-arg) wherever the stubs are followed, and its style is not ruff's (the
# pyproject's ruff exclude covers *_pb2*.py, not .pyi). Mark the stub so importing
# modules stay clean with no per-line ignores. Deterministic, so the diff test holds.
STUB="$OUT/tailwise/wire/v1/policy_pb2.pyi"
printf '# mypy: disable-error-code="type-arg"\n# ruff: noqa\n%s\n' "$(cat "$STUB")" > "$STUB"
