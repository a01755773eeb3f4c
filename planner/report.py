"""Plain-data views of plans for reports (JSON/CSV rows); no I/O here.

Times are in the evaluation's unit (``steps`` in unit time, seconds in step time);
``start_step`` is always the plan's step index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tailwise.planner.model import Evaluation, Instance, Schedule

CSV_FIELDS = (
    "request", "prompt_tokens", "output_tokens", "batch", "admit_rank", "start_step",
    "start_time", "first_token_time", "completion_time",
)


def schedule_records(instance: Instance, schedule: Schedule,
                     evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per request, in admission order."""
    batch = schedule.batch_of()
    rank = np.empty(instance.n, dtype=np.int64)
    order = schedule.admission_order()
    rank[order] = np.arange(instance.n)
    rows = []
    for i in order.tolist():
        rows.append({
            "request": i,
            "prompt_tokens": int(instance.prompts[i]),
            "output_tokens": int(instance.outputs[i]),
            "batch": int(batch[i]),
            "admit_rank": int(rank[i]),
            "start_step": int(schedule.start[i]),
            "start_time": round(float(evaluation.start_time[i]), 6),
            "first_token_time": round(float(evaluation.first_token[i]), 6),
            "completion_time": round(float(evaluation.completion[i]), 6),
        })
    return rows


def method_row(schedule: Schedule, evaluation: Evaluation) -> dict[str, Any]:
    """Summary of one method's plan (for the comparison table and JSON)."""
    out: dict[str, Any] = dict(evaluation.summary())
    out.update(method=schedule.method, dispatch=schedule.dispatch,
               plan_runtime_s=round(schedule.runtime_s, 4),
               batches=len(schedule.batches) if schedule.batches is not None else None)
    return out
