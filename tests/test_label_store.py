"""classifiers.store: labels persist per (content, rubric, model); nothing is paid twice."""
from __future__ import annotations

import threading

from classifiers.store import Label, LabelStore


def test_round_trip_and_pending(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path) as st:
        st.put(Label("k1", "edu@v1:x", "m", score=4, reasoning="good", input_tokens=100,
                     output_tokens=20, cost_usd=0.001, mode="batch"))
        st.put(Label("k2", "edu@v1:x", "m", error="refusal"))
        assert st.pending(["k1", "k2", "k3"], "edu@v1:x", "m") == ["k2", "k3"]
        assert st.pending(["k1", "k2", "k3"], "edu@v1:x", "m", retry_failed=False) == ["k3"]
        # another rubric or model is another label
        assert st.pending(["k1"], "edu@v2:y", "m") == ["k1"] and st.pending(["k1"], "edu@v1:x", "n") == ["k1"]
    with LabelStore(path) as st:          # reopened: still there
        got = st.get(["k1", "k2"], "edu@v1:x", "m")
        assert got["k1"].ok and got["k1"].score == 4 and got["k1"].input_tokens == 100
        assert not got["k2"].ok and got["k2"].error == "refusal"
        assert st.spent_usd() == 0.001 and st.spent_usd(model="n") == 0


def test_a_success_is_never_overwritten(tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as st:
        st.put(Label("k", "r", "m", error="overloaded", cost_usd=0.25, input_tokens=10))
        st.put(Label("k", "r", "m", score=2, reasoning="ok", cost_usd=0.5, input_tokens=20))
        st.put(Label("k", "r", "m", error="late failure"))
        st.put(Label("k", "r", "m", score=5, reasoning="again"))
        lab = st.get(["k"], "r", "m")["k"]
        assert (lab.score, lab.reasoning, lab.error, lab.attempts) == (2, "ok", None, 2)
        assert (lab.cost_usd, lab.input_tokens) == (0.75, 30)     # both calls were paid


def test_batches_in_flight(tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as st:
        st.add_batch("b1", "r", "m", ["a", "b"])
        st.add_batch("b2", "r", "m", ["c"])
        assert st.open_batches("r", "m") == {"b1": ["a", "b"], "b2": ["c"]}
        st.close_batch("b1")
        assert st.open_batches("r", "m") == {"b2": ["c"]}
        assert st.open_batches("r", "other") == {}


def test_threads_write_safely(tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as st:
        def work(t):
            for i in range(200):
                st.put(Label(f"{t}-{i}", "r", "m", score=i % 6))
        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        keys = [f"{t}-{i}" for t in range(4) for i in range(200)]
        assert st.pending(keys, "r", "m") == [] and len(st.get(keys, "r", "m")) == 800
