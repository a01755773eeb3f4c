"""Independent oracles for properties the engine must keep."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def aging_violations(arrival: npt.NDArray[np.float64], first_sched: npt.NDArray[np.float64],
                     aging_s: float) -> int:
    """Admissions of a later arrival while an earlier one had waited more than aging_s.

    Counts requests ``r`` overtaken (first admitted after a later arrival) at a moment
    when ``r`` had already waited more than ``aging_s``.
    """
    bad = 0
    for r in range(len(arrival)):
        later = (arrival > arrival[r]) & (first_sched < first_sched[r])
        if later.any() and (first_sched[later] - arrival[r] > aging_s + 1e-9).any():
            bad += 1
    return bad
