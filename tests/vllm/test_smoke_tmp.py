import pytest
pytest.importorskip("vllm")

def test_smoke(make_scheduler, vh):
    for cls in ("stock", "tailwise"):
        s = make_scheduler(cls, num_blocks=40, max_num_seqs=4)
        vh.add_all(s, [vh.make_request(str(i), 60 + i, max_tokens=30, arrival_time=i) for i in range(8)])
        recs = vh.run_until_idle(s)
        print(cls, len(recs), sum(len(r.preempted) for r in recs))
