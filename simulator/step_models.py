"""Calibrated step-time models, stored as data files with their provenance.

``load_step_model("h100-llama3-8b")`` reads a bundled model; any other argument is a
path to a JSON file with the same fields (see ``simulator/data/step_models/``), so users
can bring coefficients fitted to their own hardware.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from tailwise.scorer.step_time import StepTimeModel, StepTimeModelError


def bundled_models() -> list[str]:
    root = resources.files("tailwise.simulator").joinpath("data", "step_models")
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def load_step_model(name_or_path: str) -> StepTimeModel:
    """A bundled model by name, or a JSON file by path."""
    if name_or_path in bundled_models():
        ref = resources.files("tailwise.simulator").joinpath("data", "step_models", name_or_path + ".json")
        text = ref.read_text()
        origin = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise StepTimeModelError(
                f"step model {name_or_path!r}: not a bundled model ({', '.join(bundled_models())}) "
                "and no such file"
            )
        text = path.read_text()
        origin = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StepTimeModelError(f"{origin}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise StepTimeModelError(f"{origin}: expected a JSON object")
    data.setdefault("name", Path(origin).stem)
    return StepTimeModel.from_dict(data)
