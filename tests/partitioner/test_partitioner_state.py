"""to_state / from_state: JSON round trip, resumption, and field-naming rejection."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from tailwise.partitioner import PartitionerStateError, RefinePrune
from tailwise.scorer.policy import EwsjfParams, LinearWeight

P = EwsjfParams(
    base=LinearWeight(1.0, 0.002), alpha=0.9, max_queues=6, refresh_requests=50, reservoir_size=40
)


def trained() -> RefinePrune:
    rp = RefinePrune(P, seed=7)
    for i in range(130):
        rp.learn_one(float((i * 7919) % 3000 + (20_000 if i % 5 == 0 else 0)))
        rp.refresh(float(i))
    rp.learn_one(float("nan"))
    assert rp.partition() != ()
    return rp


def test_state_round_trips_through_json_and_resumes_identically() -> None:
    a = trained()
    state = a.to_state()
    text = json.dumps(state, allow_nan=False)  # JSON-serialisable, no NaN
    b = RefinePrune.from_state(json.loads(text))
    assert b.to_state() == state
    assert b.partition() == a.partition()
    assert b.params == a.params
    assert (b.skipped, b.refreshes) == (a.skipped, a.refreshes) == (1, a.refreshes)
    for i in range(130, 260):  # same future input => same future partitions
        x = float((i * 104_729) % 9000)
        for rp in (a, b):
            rp.learn_one(x)
        assert a.refresh(float(i)) == b.refresh(float(i))
        assert a.partition() == b.partition()


def test_fresh_state_round_trips() -> None:
    state = RefinePrune().to_state()
    assert state["queues"] == [] and state["reservoir"] == [] and state["last_refresh_t"] is None
    assert RefinePrune.from_state(state).to_state() == state


def test_loaded_weights_derive_from_params() -> None:
    state = trained().to_state()
    state["queues"][0]["w_base"] = 123.0  # stale or tampered weight
    q0 = RefinePrune.from_state(state).partition()[0]
    assert q0.w_base == P.base.at(q0.mean_len)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(s: dict[str, Any]) -> None:
        s[key] = value

    return edit


def _del(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(s: dict[str, Any]) -> None:
        del s[key]

    return edit


def _edit(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return fn


BAD: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("kind", _set("kind", "kmeans")),
    ("state_version", _set("state_version", 2)),
    ("state_version", _set("state_version", True)),
    ("surprise", _set("surprise", 1)),
    ("reservoir", _del("reservoir")),
    ("seed", _set("seed", -1)),
    ("seed", _set("seed", 1.5)),
    ("since_refresh", _set("since_refresh", -3)),
    ("skipped", _set("skipped", "many")),
    ("refreshes", _set("refreshes", None)),
    ("last_refresh_t", _set("last_refresh_t", "yesterday")),
    ("last_refresh_t", _set("last_refresh_t", float("inf"))),
    ("reservoir", _set("reservoir", "1,2,3")),
    ("reservoir", _set("reservoir", [1.0] * 41)),  # > params.reservoir_size
    ("reservoir[2]", _edit(lambda s: s["reservoir"].__setitem__(2, float("nan")))),
    ("reservoir[0]", _edit(lambda s: s["reservoir"].__setitem__(0, -5))),
    ("reservoir[1]", _edit(lambda s: s["reservoir"].__setitem__(1, "7"))),
    ("params", _set("params", [1, 2])),
    ("params.alpha", _edit(lambda s: s["params"].__setitem__("alpha", -1.0))),
    ("params.max_queues", _edit(lambda s: s["params"].__setitem__("max_queues", 0))),
    ("params.colour", _edit(lambda s: s["params"].__setitem__("colour", "red"))),
    ("params.base.a", _edit(lambda s: s["params"]["base"].__setitem__("a", "x"))),
    ("queues", _set("queues", {"lo": 0})),
    ("queues[1].lo", _edit(lambda s: s["queues"][1].__setitem__("lo", s["queues"][0]["lo"]))),
    ("queues[0].hi", _edit(lambda s: s["queues"][0].__setitem__("hi", s["queues"][0]["lo"]))),
    ("queues[0].density", _edit(lambda s: s["queues"][0].__setitem__("density", -1.0))),
    ("queues[0].extra", _edit(lambda s: s["queues"][0].__setitem__("extra", 1))),
    ("queues", _edit(lambda s: s.__setitem__("queues", s["queues"] * 7))),  # > max_queues
]


@pytest.mark.parametrize(("field", "edit"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_bad_state_is_rejected_naming_the_field(field: str, edit: Callable[[dict[str, Any]], None]) -> None:
    state = copy.deepcopy(trained().to_state())
    assert len(state["queues"]) >= 2
    edit(state)
    with pytest.raises(PartitionerStateError) as info:
        RefinePrune.from_state(state)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_non_mapping_state_is_rejected() -> None:
    with pytest.raises(PartitionerStateError, match=r"^state: "):
        RefinePrune.from_state([])  # type: ignore[arg-type]


def test_params_in_state_win_over_defaults() -> None:
    rp = RefinePrune(dataclasses.replace(P, max_queues=3))
    loaded = RefinePrune.from_state(rp.to_state())
    assert loaded.params.max_queues == 3
