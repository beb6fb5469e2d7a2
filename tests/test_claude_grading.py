"""classifiers.claude: grading through the real SDK against the local fake API server
(Messages and Message Batches), with faults injected."""
from __future__ import annotations

import pytest

from classifiers.claude import BudgetExceeded, MessagesGrader, NoApiKey, Settings, make_client
from classifiers.grading import cost_usd
from classifiers.rubrics import load_rubric
from classifiers.store import LabelStore
from tests.fake_anthropic import Fault

MODEL = "claude-haiku-4-5"
RUBRIC = load_rubric("educational")
DOCS = [(f"k{i}", f"Document {i}. Cells divide by mitosis; each daughter cell gets a full "
                  f"set of chromosomes. " * (i % 4 + 1)) for i in range(12)]


@pytest.fixture
def client(fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-secret-not-real")
    return make_client(Settings(model=MODEL, timeout_s=2), base_url=fake_anthropic.base_url)


def grader(client, store, **kw):
    waits = []
    settings = Settings(**{"model": MODEL, "concurrency": 4, "backoff_s": 0.01, "timeout_s": 2, **kw})
    g = MessagesGrader(client, RUBRIC, store, settings, sleep=waits.append)
    return g, waits


def test_every_document_is_labelled_and_costed(fake_anthropic, client, tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as store:
        g, _ = grader(client, store)
        stats = g.grade(DOCS)
        assert (stats.labelled, stats.failed, stats.cached) == (12, 0, 0)
        labels = store.get([k for k, _ in DOCS], RUBRIC.key, MODEL)
        assert all(lab.ok and 0 <= lab.score <= 5 and lab.reasoning for lab in labels.values())
        assert stats.cost_usd > 0 and store.spent_usd() == pytest.approx(stats.cost_usd)
        reqs = fake_anthropic.requests_to("/v1/messages", method="POST")
        assert len(reqs) == 12
        body = reqs[0].json
        assert body["tool_choice"] == {"type": "tool", "name": "record_grade"}
        assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert all("test-key-secret-not-real" not in repr(r) for r in fake_anthropic.requests)


def test_a_rerun_pays_nothing(fake_anthropic, client, tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as store:
        grader(client, store)[0].grade(DOCS[:5])
        stats = grader(client, store)[0].grade(DOCS)
        assert (stats.cached, stats.labelled) == (5, 7)
        assert len(fake_anthropic.requests_to("/v1/messages", method="POST")) == 12


def test_transport_faults_are_retried(fake_anthropic, client, tmp_path):
    fake_anthropic.inject("messages", Fault.rate_limit(retry_after=3))
    fake_anthropic.inject("messages", Fault.overloaded())
    fake_anthropic.inject("messages", Fault.server_error())
    with LabelStore(tmp_path / "s.sqlite") as store:
        g, waits = grader(client, store)
        stats = g.grade(DOCS[:4])
        assert (stats.labelled, stats.failed) == (4, 0)
        assert stats.retries == {"rate_limit": 1, "overloaded": 1, "server_error": 1}
        assert 3.0 in waits                       # retry-after honoured


def test_retry_after_is_capped_and_attempts_are_bounded(fake_anthropic, client, tmp_path):
    fake_anthropic.inject("messages", Fault.rate_limit(retry_after=3600), times=10)
    with LabelStore(tmp_path / "s.sqlite") as store:
        g, waits = grader(client, store, max_rate_limited=3, max_wait_s=5)
        stats = g.grade(DOCS[:1])
        assert (stats.labelled, stats.failed) == (0, 1) and waits == [5, 5]
        assert "rate limited 3 times" in store.get(["k0"], RUBRIC.key, MODEL)["k0"].error


@pytest.mark.parametrize("fault, why", [(Fault.refusal(), "refusal"),
                                        (Fault.score_out_of_range(9), "outside"),
                                        (Fault.missing_score(), "not an integer")])
def test_invalid_answers_retried_once_then_recorded(fake_anthropic, client, tmp_path, fault, why):
    fake_anthropic.inject("messages", fault, times=2)
    with LabelStore(tmp_path / "s.sqlite") as store:
        stats = grader(client, store, concurrency=1)[0].grade(DOCS[:2])
        got = store.get(["k0", "k1"], RUBRIC.key, MODEL)
        # the first document fails twice and is recorded; the second is graded
        assert (stats.labelled, stats.failed) == (1, 1)
        assert why in got["k0"].error and got["k1"].ok


def test_one_invalid_answer_then_a_good_one(fake_anthropic, client, tmp_path):
    fake_anthropic.inject("messages", Fault.refusal())
    with LabelStore(tmp_path / "s.sqlite") as store:
        stats = grader(client, store, concurrency=1)[0].grade(DOCS[:1])
        lab = store.get(["k0"], RUBRIC.key, MODEL)["k0"]
        assert stats.labelled == 1 and lab.ok and lab.attempts == 2


def test_timeouts_are_retried(fake_anthropic, client, tmp_path):
    fake_anthropic.inject("messages", Fault.delay(3.0))
    with LabelStore(tmp_path / "s.sqlite") as store:
        stats = grader(client, store, concurrency=1)[0].grade(DOCS[:1])
        assert stats.labelled == 1 and stats.retries == {"timeout": 1}


def test_budget_stops_before_overspending(fake_anthropic, client, tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as store:
        g, _ = grader(client, store, concurrency=1, max_usd=1e-9)
        with pytest.raises(BudgetExceeded):
            g.grade(DOCS)
        assert len(fake_anthropic.requests_to("/v1/messages", method="POST")) == 1


def test_no_key_says_so(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(NoApiKey, match="--labeler heuristic"):
        make_client(Settings(model=MODEL))


# --- Message Batches ------------------------------------------------------------------

def batch_grader(client, store, **kw):
    from classifiers.claude import BatchGrader
    waits = []
    settings = Settings(**{"model": MODEL, "timeout_s": 2, **kw})
    return BatchGrader(client, RUBRIC, store, settings, poll_s=0.5, sleep=waits.append), waits


def test_batch_grades_everything_at_half_price(fake_anthropic, client, tmp_path):
    with LabelStore(tmp_path / "b.sqlite") as store:
        g, waits = batch_grader(client, store)
        stats = g.grade(DOCS)
        assert (stats.labelled, stats.failed) == (12, 0) and waits == [0.5]    # polled once
        labels = store.get([k for k, _ in DOCS], RUBRIC.key, MODEL)
        assert all(lab.ok and lab.mode == "batch" for lab in labels.values())
        for lab in labels.values():      # half of what the same tokens cost as Messages calls
            usage = {"input_tokens": lab.input_tokens, "output_tokens": lab.output_tokens,
                     "cache_read_input_tokens": lab.cache_read_tokens,
                     "cache_creation_input_tokens": lab.cache_write_tokens}
            assert lab.cost_usd == pytest.approx(cost_usd(MODEL, usage, batch=False) / 2)
        assert not store.open_batches(RUBRIC.key, MODEL)


def test_batch_entries_that_fail_get_one_more_round(fake_anthropic, client, tmp_path):
    from tests.fake_anthropic import BatchOutcome
    # custom ids are d<index> within each batch, and the forced outcomes hold for every
    # batch: the three failing documents are resubmitted once (as d0..d2), fail again and
    # are recorded with their reasons
    fake_anthropic.batch_result("d0", BatchOutcome.errored("api_error", "boom"))
    fake_anthropic.batch_result("d1", BatchOutcome.expired())
    fake_anthropic.batch_result("d2", BatchOutcome.succeeded_with(Fault.refusal()))
    with LabelStore(tmp_path / "b.sqlite") as store:
        stats = batch_grader(client, store)[0].grade(DOCS[:5])
        got = store.get([k for k, _ in DOCS[:5]], RUBRIC.key, MODEL)
        assert len(fake_anthropic.requests_to("/v1/messages/batches", method="POST")) == 2
        assert (stats.labelled, stats.failed) == (2, 3) and got["k3"].ok and got["k4"].ok
        assert got["k0"].error == "batch entry errored: boom"
        assert got["k1"].error == "batch entry expired"
        assert got["k2"].error.startswith("refusal") and got["k2"].cost_usd > 0
        assert stats.retries == {"errored": 2, "expired": 2, "invalid_answer": 2}


def test_a_killed_run_collects_its_batch_instead_of_paying_again(fake_anthropic, client, tmp_path):
    from classifiers.grading import request_params
    with LabelStore(tmp_path / "b.sqlite") as store:
        keys = [k for k, _ in DOCS[:4]]
        # the first run submitted and recorded a batch, then died before collecting it
        batch = client.messages.batches.create(requests=[
            {"custom_id": f"d{i}", "params": request_params(RUBRIC, t, model=MODEL)}
            for i, (_, t) in enumerate(DOCS[:4])])
        store.add_batch(batch.id, RUBRIC.key, MODEL, keys)
        stats = batch_grader(client, store)[0].grade(DOCS[:4])
        assert stats.labelled == 4 and stats.sent == 0
        assert len(fake_anthropic.requests_to("/v1/messages/batches", method="POST")) == 1
