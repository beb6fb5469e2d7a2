"""`curate mix` end to end on the demo corpus (small budgets), and its config errors."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from pipelines.cli import main

SMALL = """
demo: true
proxy: {backend: ngram, budget_tokens: 200000}
search: {rounds: 2, runs_per_round: 2, noise_seeds: 2, final_seeds: 3, final_top: 1}
baselines: [{name: uniform}, {name: natural}, {name: temperature, taus: [2, 5]}]
proposers: [{name: random}, {name: regression, model: linear, candidates: 2000}, {name: claude}]
claude_model: claude-haiku-4-5
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix")
    cfg = out / "mix.yaml"
    cfg.write_text(SMALL)
    mp = pytest.MonkeyPatch()
    mp.delenv("ANTHROPIC_API_KEY", raising=False)
    try:
        assert main(["mix", "--config", str(cfg), "--output", str(out / "run")]) == 0
    finally:
        mp.undo()
    return out / "run"


def test_outputs_and_the_judgement(demo_run):
    s = json.loads((demo_run / "summary.json").read_text())
    assert s["skipped_proposers"]["claude"].startswith("skipped: ANTHROPIC_API_KEY is not set")
    rows = list(csv.DictReader((demo_run / "candidates.csv").open()))
    assert len(rows) == s["proxy_runs"]
    strategies = {r["strategy"] for r in rows if r["phase"] == "search"}
    assert strategies == {"uniform", "natural", "temperature(tau=2)", "temperature(tau=5)",
                          "random", "regression"}
    per = {k: sum(r["strategy"] == k and r["phase"] == "search" for r in rows)
           for k in ("random", "regression")}
    assert per == {"random": 4, "regression": 4}
    finals = [r for r in rows if r["phase"] == "final"]
    assert {r["split"] for r in finals} == {"test"}
    m = yaml.safe_load((demo_run / "mixture.yaml").read_text())
    assert sum(m["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert min(m["weights"].values()) >= 0.01 - 1e-9
    assert m["test"]["seeds"] == 3
    baselines = {c["baseline"] for c in m["against_baselines"]}
    assert {"uniform", "natural"} - {m["provenance"]["strategy"]} <= baselines
    for c in m["against_baselines"]:
        assert c["verdict"] in ("better", "worse", "tie")
        assert (c["verdict"] == "tie") == (abs(c["difference"]) < c["two_noise_sd"])
    stats = json.loads((demo_run / "statistics.json").read_text())
    assert set(stats["domains"]) == set(m["weights"])
    assert (demo_run / "tokenizer.json").exists()
    assert (demo_run / "megatron_data_path.txt").read_text().count("_text_document") == len(m["weights"])


def test_rerun_uses_the_cache_and_gives_the_same_mixture(demo_run, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    before = (demo_run / "mixture.yaml").read_text()
    candidates_before = (demo_run / "candidates.csv").read_text()
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(SMALL)
    assert main(["mix", "--config", str(cfg), "--output", str(demo_run)]) == 0
    s = json.loads((demo_run / "summary.json").read_text())
    assert s["proxy_runs_computed"] == 0
    assert (demo_run / "mixture.yaml").read_text() == before
    # the tables are results only: a rerun from the cache writes the same bytes
    assert (demo_run / "candidates.csv").read_text() == candidates_before


def test_claude_proposes_through_the_fake_server(fake_anthropic, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-not-real")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(SMALL.replace("{name: random}, {name: regression, model: linear, candidates: 2000}, ", "")
                   + "claude_hide_names: true\n")
    assert main(["mix", "--config", str(cfg), "--output", str(tmp_path / "run")]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["skipped_proposers"] == {}
    assert s["claude"]["calls"] == 2 and s["claude"]["cost_usd"] > 0
    assert len(s["claude"]["rationales"]) == 4
    assert all(r["rationale"].startswith("Fake proposer") for r in s["claude"]["rationales"])
    body = json.dumps([r.json for r in fake_anthropic.requests_to("/v1/messages", "POST")])
    assert "books" not in body and "d1" in body          # names hidden


@pytest.mark.parametrize("text, msg", [
    ("demo: true\nproxy: {budget_tokens: 10}\n", "budget_tokens"),
    ("demo: true\ninputs: [x]\n", "exactly one of"),
    ("demo: true\nconstraints: {max_epochs: 0.001}\n", "raise max_epochs"),
    ("demo: true\nbaselines: [{name: nope}]\n", "nope"),
    ("demo: true\ntarget: {kind: weighted, weights: {mars: 1}}\n", "unknown domains"),
])
def test_config_errors(tmp_path, capsys, text, msg):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(text)
    assert main(["mix", "--config", str(cfg), "--output", str(tmp_path / "o")]) == 2
    assert msg in capsys.readouterr().err


def test_export_samples_the_mixture(demo_run, tmp_path):
    import gzip
    out = tmp_path / "export"
    args = ["export", "--mixture", str(demo_run / "mixture.yaml"), "--output", str(out),
            "--tokens", "300000", "--shard-docs", "50"]
    assert main(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    weights = yaml.safe_load((demo_run / "mixture.yaml").read_text())["weights"]
    assert set(m["domains"]) == set(weights)
    for d, v in m["domains"].items():
        asked = round(weights[d] * 300000)
        assert v["tokens_asked"] == asked
        assert asked <= v["tokens_achieved"] < asked + 20000      # overshoot < one document
        rows = []
        for p in sorted((out / d).glob("part-*.jsonl.gz")):
            with gzip.open(p, "rt") as f:
                rows.extend(json.loads(x) for x in f)
        assert len(rows) == v["documents"] and {r["domain"] for r in rows} == {d}
        assert max(r["epoch"] for r in rows) + 1 >= v["epochs"]
    assert not [p for p in out.rglob(".*")]                       # no temporary files left
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.jsonl.gz")}
    assert main(args) == 0                                        # deterministic
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.jsonl.gz")} == first


def test_export_refuses_an_infeasible_budget(demo_run, tmp_path, capsys):
    assert main(["export", "--mixture", str(demo_run / "mixture.yaml"), "--output",
                 str(tmp_path / "x"), "--tokens", "1000000000"]) == 2
    err = capsys.readouterr().err
    assert "infeasible within the repetition cap" in err and "largest N that fits" in err
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_atomic_path_renames_on_success_and_cleans_up_on_failure(tmp_path):
    from curation.mixture._files import atomic_path, write_atomic
    target = tmp_path / "sub" / "f.bin"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]
    with atomic_path(target) as tmp:
        assert tmp.startswith(str(target.parent) + "/.f.bin.") and tmp.endswith(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert target.read_bytes() == b"old"                     # not in place until the end
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]
