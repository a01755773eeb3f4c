"""Trace loaders: formats, bad rows named by file and line, skip-and-count, scaling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.traces import TraceError, load_trace
from tailwise.simulator.workload import concat, generate, offered_load, rate_scale_for_load

AZ_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_bundled_traces_load() -> None:
    for name in ("azure-code", "azure-conv"):
        t = load_trace(name)
        assert len(t) >= 4000
        assert t.arrival_s[0] == 0.0 and (np.diff(t.arrival_s) >= 0).all()
        assert (t.prompt_tokens >= 1).all() and (t.output_tokens >= 1).all()


def test_azure_csv_parses_seven_digit_fractions(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(AZ_HEADER + "2023-11-16 18:17:03.9799600,4808,10\n"
                 "2023-11-16 18:17:04.0319600,3180,8\n")
    t = load_trace(f)
    assert t.arrival_s.tolist() == pytest.approx([0.0, 0.052])
    assert t.prompt_tokens.tolist() == [4808, 3180]


@pytest.mark.parametrize(("row", "msg"), [
    ("2023-11-16 18:17:05.0,-3,10", "prompt length"),
    ("2023-11-16 18:17:05.0,,10", "prompt length"),
    ("2023-11-16 18:17:05.0,5,0", "output length"),
    ("not-a-time,5,10", "timestamp"),
    ("2023-11-16 18:17:01.0,5,10", "earlier than the previous"),
    ("2023-11-16 18:17:05.0,5", "expected 3 fields"),
])
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, msg: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(AZ_HEADER + "2023-11-16 18:17:04.0,100,10\n" + row + "\n")
    with pytest.raises(TraceError, match=rf"bad\.csv:3: .*{msg}"):
        load_trace(f)
    t = load_trace(f, skip_bad=True)
    assert len(t) == 1 and t.skipped == 1 and "bad.csv:3" in t.skip_reasons[0]


def test_mooncake_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    rows = [{"timestamp": 0, "input_length": 600, "output_length": 20, "hash_ids": [1, 2]},
            {"timestamp": 1500, "input_length": 700, "output_length": 5, "hash_ids": [1, 3]}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_trace(f)
    assert t.arrival_s.tolist() == [0.0, 1.5]
    assert t.hash_ids == [(1, 2), (1, 3)]
    f.write_text(json.dumps(rows[0]) + "\n{broken\n")
    with pytest.raises(TraceError, match=r"m\.jsonl:2: invalid JSON"):
        load_trace(f)
    f.write_text(json.dumps({**rows[0], "hash_ids": ["x"]}) + "\n")
    with pytest.raises(TraceError, match="hash_ids must be a list of integers"):
        load_trace(f)


def test_generic_csv_and_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "g.csv"
    f.write_text("t,in,out,class\n0.5,10,3,short\n1.0,2000,40,long\n")
    with pytest.raises(TraceError, match="no prompt column"):
        load_trace(f)
    t = load_trace(f, columns={"arrival": "t", "prompt": "in", "output": "out"})
    assert t.classes == ["short", "long"] and t.arrival_s.tolist() == [0.0, 0.5]
    j = tmp_path / "g.jsonl"
    j.write_text('{"arrival_time": 100, "prompt_tokens": 5, "output_tokens": 2}\n'
                 '{"arrival_time": 350, "prompt_tokens": 6, "output_tokens": 1}\n')
    assert load_trace(j, time_unit="ms").arrival_s.tolist() == pytest.approx([0.0, 0.25])


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv")
    e = tmp_path / "e.csv"
    e.write_text(AZ_HEADER)
    with pytest.raises(TraceError, match="no valid requests"):
        load_trace(e)


def test_rate_scale_and_target_load() -> None:
    t = load_trace("azure-code").head(500)
    s = t.scaled(4.0)
    assert s.arrival_s == pytest.approx(t.arrival_s / 4.0)
    assert (s.prompt_tokens == t.prompt_tokens).all()
    cfg = EngineConfig()
    x = rate_scale_for_load(t, 0.8, cfg, H100_LLAMA3_8B)
    assert offered_load(t.scaled(x), cfg, H100_LLAMA3_8B) == pytest.approx(0.8)
    with pytest.raises(TraceError):
        t.scaled(0.0)


def test_generators_are_seeded_and_mixed() -> None:
    a = generate(2000, 10.0, seed=1)
    b = generate(2000, 10.0, seed=1)
    assert (a.prompt_tokens == b.prompt_tokens).all()
    assert a.classes is not None
    share = a.classes.count("short") / len(a)
    assert 0.75 < share < 0.85
    assert len(a) / a.duration_s == pytest.approx(10.0, rel=0.1)
    g = generate(4000, 10.0, arrival="gamma", cv=3.0, seed=2)
    gaps = np.diff(g.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.25)
    both = concat(a, g)
    assert len(both) == 6000 and (np.diff(both.arrival_s) >= 0).all()
