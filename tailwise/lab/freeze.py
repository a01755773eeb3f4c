"""``tailwise freeze``: a study's chosen policy written as a frozen policy file."""

from __future__ import annotations

from pathlib import Path

from tailwise.bayes_opt.freeze import load_study, select_policy
from tailwise.scorer.policy import Policy
from tailwise.wire.policy_file import load, save


def freeze_study(
    storage: str, study_name: str, out: str | Path, which: str = "best",
    unpromoted: bool = False,
) -> tuple[Path, Policy, str]:
    """Write the selected policy of ``study_name`` to ``out`` (atomic, ``source=frozen``);
    returns the path, the policy read back (hash checked) and where it came from."""
    study = load_study(storage, study_name)
    policy, where = select_policy(study, which, unpromoted)
    note = policy.note or f"frozen from study {study_name!r}, {where}"
    path = save(policy.replace(note=note), out)
    return path, load(path), where
