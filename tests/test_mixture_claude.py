"""The Claude mixture proposer through the real SDK against the local fake server."""
from __future__ import annotations

import json

import pytest

from curation.mixture.claude import ClaudeProposer, ProposalError, TOOL_NAME, aliases
from curation.mixture.types import Constraints, DomainInfo
from tests.fake_anthropic import Fault

DOMAINS = [DomainInfo("books", 30, 900_000, 200_000, {"quality_mean": 0.7}),
           DomainInfo("code", 100, 400_000, 150_000),
           DomainInfo("web", 500, 2_000_000, 500_000, {"quality_mean": 0.4})]
C = Constraints(min_weight=0.05, max_epochs=2.0, budget_tokens=400_000)
MODEL = "claude-haiku-4-5"


@pytest.fixture
def api(fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-not-real")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    return fake_anthropic


def proposer(**kw):
    from classifiers.claude import Settings
    settings = Settings(model=MODEL, max_tokens=2000, backoff_s=0.01)
    return ClaudeProposer(DOMAINS, C, target="mean bits per byte over the domains",
                          model=MODEL, settings=settings, sleep=lambda s: None, **kw)


def _requests(api):
    return [r.json for r in api.requests_to("/v1/messages", "POST")]


def test_proposals_are_parsed_normalised_and_explained(api):
    p = proposer()
    props = p.propose([], 3)
    assert len(props) == 3
    for pr in props:
        assert pr.strategy == "claude" and pr.rationale.startswith("Fake proposer")
        assert sum(pr.weights.values()) == pytest.approx(1.0)
        assert set(pr.weights) == {"books", "code", "web"}
    assert props[0].weights["books"] == pytest.approx(0.5)
    req = _requests(api)[0]
    assert req["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert req["system"][0]["cache_control"] == {"type": "ephemeral"}
    schema = req["tools"][0]["input_schema"]["properties"]["mixtures"]
    assert schema["maxItems"] == 3
    assert schema["items"]["properties"]["weights"]["required"] == ["books", "code", "web"]
    assert p.stats.calls == 1 and p.stats.cost_usd > 0 and p.stats.input_tokens > 0


def test_history_and_rules_reach_the_prompt(api):
    history = [{"strategy": "uniform", "round": 0, "target": 1.2345,
                "weights": {"books": 1 / 3, "code": 1 / 3, "web": 1 / 3},
                "bpb": {"books": 1.1, "code": 0.9, "web": 1.7}}]
    proposer().propose(history, 2)
    req = _requests(api)[0]
    user = req["messages"][0]["content"]
    assert "| 1 | uniform | 0 | 0.3333 | 0.3333 | 0.3333 | 1.2345 | 1.1000 | 0.9000 | 1.7000 |" in user
    assert "quality_mean" in user and "400,000 tokens" in user
    system = req["system"][0]["text"]
    assert "at least 0.05" in system and "at most 2 times" in system


def test_hidden_names(api):
    p = proposer(hide_names=True)
    assert aliases(DOMAINS, True) == {"web": "d1", "books": "d2", "code": "d3"}
    props = p.propose([{"strategy": "natural", "round": 0, "target": 1.0,
                        "weights": {"books": 0.2, "code": 0.2, "web": 0.6}, "bpb": {}}], 2)
    body = json.dumps(_requests(api)[0])
    for name in ("books", "code", "web"):
        assert name not in body
    # the answer in d-names comes back in real names: d1 (web) leads the first mixture
    assert props[0].weights["web"] == pytest.approx(0.5)


def test_projection_is_applied_and_logged(api):
    def project(w):
        return {k: 1 / 3 for k in w}, "projected onto the caps"
    props = proposer(project=project).propose([], 1)
    assert props[0].weights == {"books": 1 / 3, "code": 1 / 3, "web": 1 / 3}
    assert props[0].raw_weights["books"] == pytest.approx(0.5)
    assert props[0].projection == "projected onto the caps"


def test_faults_are_retried(api):
    api.inject("messages", Fault.rate_limit(retry_after=0.01))
    api.inject("messages", Fault.overloaded())
    api.inject("messages", Fault.text_block("I suggest more books."))   # no tool call
    p = proposer()
    assert len(p.propose([], 2)) == 2
    assert p.stats.retries == {"rate_limit": 1, "overloaded": 1, "invalid_answer": 1}


def test_bad_answers_twice_raise(api):
    calls = []

    def bad(doc, req):
        calls.append(1)
        return {"mixtures": [{"weights": {"books": -1, "code": 1, "web": 1}, "rationale": "x"}]}

    api.grader = bad
    with pytest.raises(ProposalError, match="not a non-negative number"):
        proposer().propose([], 1)
    assert len(calls) == 2


def test_no_key(monkeypatch):
    from classifiers.claude import NoApiKey
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(NoApiKey):
        proposer()


SECRET = "test-key-echoed-by-a-careless-api"


def test_a_key_echoed_in_an_error_is_redacted(key_echoing_api):
    with pytest.raises(ProposalError) as info:
        proposer().propose([], 1)
    assert "AuthenticationError (401)" in str(info.value)
    assert SECRET not in str(info.value) and "<redacted>" in str(info.value)


def test_curate_mix_never_prints_an_echoed_key(key_echoing_api, tmp_path, capsys):
    from pipelines.cli import main
    cfg = tmp_path / "mix.yaml"
    cfg.write_text("demo: true\nproxy: {backend: ngram, budget_tokens: 200000}\n"
                   "search: {rounds: 1, runs_per_round: 1, noise_seeds: 2, final_seeds: 3, "
                   "final_top: 1}\nbaselines: [{name: uniform}]\nproposers: [{name: claude}]\n"
                   "claude_model: claude-haiku-4-5\n")
    main(["mix", "--config", str(cfg), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert "claude round 1: no proposals" in err and "AuthenticationError (401)" in err
    assert SECRET not in err
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
