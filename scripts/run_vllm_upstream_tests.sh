#!/usr/bin/env bash
# vLLM's own scheduler tests, run against tailwise's TailwiseScheduler and
# TailwiseAsyncScheduler (neutral policy), on CPU and offline.
#
# The tests come from vLLM's source distribution, fetched here at run time (never
# committed): tests/v1/core/{test_scheduler,test_async_scheduler,
# test_priority_scheduler_random,test_priority_preemption_bug}.py and their helpers.
# scripts/vllm_upstream/conftest.py points the helpers' Scheduler/AsyncScheduler names
# at the tailwise classes. A local Hugging Face cache holds only config.json of the two
# small OPT models the tests name. Tests that need multimodal/encoder models (configs
# and processors that cannot be had offline) are deselected: see DESELECT below.
#
# Usage: scripts/run_vllm_upstream_tests.sh [WORK_DIR [PYTEST_ARGS...]]
#        (WORK_DIR defaults to build/vllm-upstream; the sdist is reused from there)
# Needs the active Python to have vLLM 0.32.0 (CUDA or CPU build) and tailwise.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/build/vllm-upstream}"
[ $# -gt 0 ] && shift
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
PY="${PYTHON:-python}"
VERSION=0.32.0
SDIST="$WORK/vllm-$VERSION.tar.gz"

if [ ! -f "$SDIST" ]; then
  # pip prepares the sdist's metadata even for `download`; without build isolation and
  # with vLLM's "empty" target this needs only these two small build tools (no compiler).
  "$PY" -m pip install --quiet setuptools-rust setuptools-scm
  VLLM_TARGET_DEVICE=empty VLLM_SKIP_VERSION_SUFFIX=1 \
    "$PY" -m pip download --quiet --no-deps --no-binary vllm --no-build-isolation \
      "vllm==$VERSION" -d "$WORK"
fi

SRC="$WORK/src"
rm -rf "$SRC"
mkdir -p "$SRC"
FILES=(
  tests/__init__.py tests/v1/__init__.py
  tests/v1/core/__init__.py tests/v1/core/utils.py
  tests/v1/core/test_scheduler.py tests/v1/core/test_async_scheduler.py
  tests/v1/core/test_priority_scheduler_random.py tests/v1/core/test_priority_preemption_bug.py
  tests/v1/kv_connector/__init__.py tests/v1/kv_connector/unit/__init__.py
  tests/v1/kv_connector/unit/utils.py tests/v1/core/test_prefix_caching.py
)
tar -xzf "$SDIST" -C "$SRC" --strip-components=1 "${FILES[@]/#/vllm-$VERSION/}"
cp "$ROOT/scripts/vllm_upstream/conftest.py" "$SRC/conftest.py"
printf '[pytest]\naddopts = -p no:cacheprovider\nmarkers =\n    cpu_test\n    skip_global_cleanup\n' > "$SRC/pytest.ini"

# Offline Hugging Face cache: config.json only, for the models the tests name.
export HF_HOME="$WORK/hf-home" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_TARGET_DEVICE=cpu
rm -rf "$HF_HOME"
"$PY" "$ROOT/scripts/vllm_upstream/hf_cache.py" "$HF_HOME/hub"

# Deselected (node-id prefixes, all parametrizations): they build multimodal or
# encoder-cache schedulers from LLaVA-1.5 / Qwen2.5-VL configs, whose model classes
# cannot be inspected here (no torchvision on CPU, no processor files offline).
DESELECT=(
  tests/v1/core/test_priority_scheduler_random.py::test_priority_scheduling_blast
  tests/v1/core/test_scheduler.py::test_ec_connector_allocate_encoder_tokens_with_external_load
  tests/v1/core/test_scheduler.py::test_ec_connector_cache_hit_external_load
  tests/v1/core/test_scheduler.py::test_ec_connector_cache_miss_computes_locally
  tests/v1/core/test_scheduler.py::test_ec_connector_defers_running_request_for_async_reload
  tests/v1/core/test_scheduler.py::test_ec_connector_ensure_cache_available_defers_request
  tests/v1/core/test_scheduler.py::test_ec_connector_schedule_multiple_requests
  tests/v1/core/test_scheduler.py::test_ec_connector_text_only_request
  tests/v1/core/test_scheduler.py::test_ec_connector_unable_to_allocate
  tests/v1/core/test_scheduler.py::test_ec_connector_update_connector_output_called
  tests/v1/core/test_scheduler.py::test_ec_connector_with_partial_cache_hit_multi_round
  tests/v1/core/test_scheduler.py::test_encoder_cache_accepts_matching_embed_count
  tests/v1/core/test_scheduler.py::test_encoder_cache_embed_count_mismatch_restores_prior_hit_state
  tests/v1/core/test_scheduler.py::test_encoder_cache_recomputed_when_evicted_during_preemption
  tests/v1/core/test_scheduler.py::test_encoder_cache_rejects_mismatched_embed_count
  tests/v1/core/test_scheduler.py::test_encoder_cache_rejects_mismatched_embed_count_within_request
  tests/v1/core/test_scheduler.py::test_encoder_cache_retained_across_preemption_and_resume
  tests/v1/core/test_scheduler.py::test_encoder_only_prompt_longer_than_budget_is_chunked
  tests/v1/core/test_scheduler.py::test_free_encoder_inputs_defers_for_eagle_lookahead
  tests/v1/core/test_scheduler.py::test_free_encoder_inputs_notifies_the_ec_connector
  tests/v1/core/test_scheduler.py::test_free_encoder_inputs_respects_unconfirmed_placeholders
  tests/v1/core/test_scheduler.py::test_free_encoder_inputs_unchanged_without_spec_decode
  tests/v1/core/test_scheduler.py::test_no_mm_input_chunking
  tests/v1/core/test_scheduler.py::test_no_mm_input_chunking_for_same_step_duplicate
  tests/v1/core/test_scheduler.py::test_priority_scheduling_ec_connector_preemption_and_resumption
  tests/v1/core/test_scheduler.py::test_same_step_duplicate_encoder_input_stays_cached
  tests/v1/core/test_scheduler.py::test_schedule_multimodal_requests
  tests/v1/core/test_scheduler.py::test_schedule_partial_requests
  tests/v1/core/test_scheduler.py::test_unavailable_encoder_input_fails_the_request_as_retryable
tests/v1/core/test_scheduler.py::test_eagle3_mm_encoder_cache_with_shift
)
args=()
for t in "${DESELECT[@]}"; do args+=(--deselect "$t"); done

echo "vLLM's scheduler tests against tailwise's classes; deselected (multimodal): ${#DESELECT[@]} tests"
cd "$SRC"
PYTHONPATH="$ROOT:$SRC${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest "${args[@]}" \
  tests/v1/core/test_scheduler.py tests/v1/core/test_async_scheduler.py \
  tests/v1/core/test_priority_scheduler_random.py tests/v1/core/test_priority_preemption_bug.py \
  "$@"
