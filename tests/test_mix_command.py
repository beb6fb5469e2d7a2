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
fidelity: {params: {order: 4}, budget_tokens: 400000, mixtures: 3, seeds: 3}
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
    # every final seed is shared: a finalist per mixture, run once under all its names
    assert len({r["mixture"] for r in finals_rows(rows)}) == len(finals_rows(rows)) // 3
    baselines = {c["baseline"] for c in m["against_baselines"]}
    assert {"uniform", "natural"} - {m["provenance"]["strategy"]} <= baselines
    finals = {}
    for r in rows:
        if r["phase"] == "final":
            finals.setdefault(r["mixture"], {})[int(r["seed"])] = float(r["target_bpb"])
    chosen = finals[next(r["mixture"] for r in rows if r["phase"] == "search"
                         and int(r["run"]) == m["provenance"]["search_run"])]
    for c in m["against_baselines"]:
        assert c["verdict"] in ("better", "worse", "tie", "same")
        lo, hi = c["interval"]
        assert c["verdict"] == ("same" if c["names"] == m["names"] else "better" if hi < 0
                                else "worse" if lo > 0 else "tie")
        base = finals[next(r["mixture"] for r in rows if r["phase"] == "final"
                           and r["strategy"] == c["names"][0])]
        # paired seed by seed, as the candidates table has them
        assert c["differences"] == pytest.approx([chosen[k] - base[k] for k in sorted(chosen)], abs=1e-6)
    assert s["against_baselines"] == m["against_baselines"] or \
        [x["interval"] for x in s["against_baselines"]] == [x["interval"] for x in m["against_baselines"]]
    stats = json.loads((demo_run / "statistics.json").read_text())
    assert set(stats["domains"]) == set(m["weights"])
    assert (demo_run / "tokenizer.json").exists()
    assert (demo_run / "megatron_data_path.txt").read_text().count("_text_document") == len(m["weights"])


def finals_rows(rows):
    return [r for r in rows if r["phase"] == "final"]


def test_the_fidelity_check(demo_run):
    s = json.loads((demo_run / "summary.json").read_text())
    m = yaml.safe_load((demo_run / "mixture.yaml").read_text())
    f = s["fidelity"]
    assert f["larger_proxy"] == "ngram (order 4) at 400,000 tokens"
    assert f["search_proxy"] == "ngram at 200,000 tokens"
    kinds = [x["kind"] for x in f["mixtures"]]
    assert kinds.count("finalist") == len(s["finalists"]) and 1 <= kinds.count("extra") <= 3
    rows = list(csv.DictReader((demo_run / "fidelity.csv").open()))
    assert len(rows) == s["fidelity_runs"] == len(f["mixtures"]) * 2 * 3
    assert {r["proxy"] for r in rows} == {"search", "larger"} and {r["split"] for r in rows} == {"test"}
    # the search proxy's finalists come from the cache: the final runs already made them
    cand = {(r["mixture"], int(r["seed"])): float(r["target_bpb"])
            for r in csv.DictReader((demo_run / "candidates.csv").open()) if r["phase"] == "final"}
    for r in rows:
        if r["proxy"] == "search" and r["kind"] == "finalist":
            assert float(r["target_bpb"]) == pytest.approx(cand[(r["mixture"], int(r["seed"]))], abs=1e-6)
    # the rank correlation is the one of the two proxies' means in the table
    from scipy.stats import spearmanr
    by = {}
    for r in rows:
        by.setdefault(r["mixture"], {}).setdefault(r["proxy"], []).append(float(r["target_bpb"]))
    keys = sorted(by)
    rho = spearmanr([sum(by[k]["search"]) for k in keys], [sum(by[k]["larger"]) for k in keys]).statistic
    assert f["spearman"] == pytest.approx(rho)
    larger_best = min((x for x in f["mixtures"] if x["kind"] == "finalist"),
                      key=lambda x: x["larger_target_mean"])
    assert f["winner"]["same"] == (larger_best["names"] == m["names"])
    assert f["supported"] == (f["spearman"] >= 0.8 and f["winner"]["same"])
    assert m["fidelity"]["supported"] == f["supported"] and m["fidelity"]["message"] == f["message"]
    assert ("not yet supported" in f["message"]) == (not f["supported"])
    assert s["timings_s"]["fidelity"] > 0
    # its runs have cache entries of their own, apart from the search proxy's
    cache = [json.loads(x) for x in (demo_run / "proxy_cache.jsonl").read_text().splitlines()]
    assert {(e["identity"]["budget_tokens"], e["identity"]["params"]["order"]) for e in cache} == \
        {(200000, 3), (400000, 4)}


def test_mix_prints_the_fidelity_result_before_the_weights(demo_run, tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)                # every proxy run cached: a rerun is quick
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(SMALL)
    assert main(["mix", "--config", str(cfg), "--output", str(run)]) == 0
    err = capsys.readouterr().err.splitlines()
    s = json.loads((run / "summary.json").read_text())
    i = err.index("mix: " + s["fidelity"]["message"])
    j = next(k for k, line in enumerate(err) if line.startswith("mix: chose "))
    assert i < j and "95% CI" in err[j + 1]
    # fidelity off: said so, and no fidelity.csv left from the run before
    cfg.write_text(SMALL.replace("fidelity: {params: {order: 4}, budget_tokens: 400000, mixtures: 3, seeds: 3}",
                                 "fidelity: {enabled: false}"))
    assert main(["mix", "--config", str(cfg), "--output", str(run)]) == 0
    assert "the choice is untested beyond the search proxy" in capsys.readouterr().err
    assert not (run / "fidelity.csv").exists()


def test_fidelity_refuses_the_search_proxy_itself(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("demo: true\nproxy: {budget_tokens: 100000}\nfidelity: {budget_factor: 1}\n")
    assert main(["mix", "--config", str(cfg), "--output", str(tmp_path / "o")]) == 2
    assert "the larger proxy is the search proxy itself" in capsys.readouterr().err


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
    # the shares add up to N, and the total reaches N and passes it by less than a
    # document (no demo document reaches 20,000 tokens); each domain is within one of its share
    assert sum(v["tokens_asked"] for v in m["domains"].values()) == m["tokens_asked"] == 300000
    assert 300000 <= m["tokens_achieved"] < 300000 + 20000
    for d, v in m["domains"].items():
        assert abs(v["tokens_asked"] - weights[d] * 300000) <= 1
        assert abs(v["tokens_achieved"] - v["tokens_asked"]) < 20000
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
    from curation.fs import atomic_path, write_atomic
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


def test_every_shipped_config_checks_fidelity():
    from pathlib import Path

    from curation.mixture.config import MixConfig
    repo = Path(__file__).resolve().parents[1]
    sections = {p.name: yaml.safe_load(p.read_text()) for p in (repo / "configs" / "mix").glob("*.yaml")}
    sections["demo.yaml (curate run)"] = {**yaml.safe_load((repo / "configs" / "demo.yaml").read_text())["mix"],
                                          "demo": True}
    assert {"demo.yaml", "gpu.yaml"} <= set(sections)
    for name, data in sections.items():
        cfg = MixConfig.model_validate(data)
        larger = cfg.fidelity_proxy()
        assert larger is not None, name
        assert (larger.backend, larger.budget_tokens, larger.params) != \
            (cfg.proxy.backend, cfg.proxy.budget_tokens, cfg.proxy.params), name
        assert cfg.search.noise_seeds >= 5 and cfg.search.final_seeds >= 5, name
    gpu = MixConfig.model_validate(sections["gpu.yaml"]).fidelity_proxy()
    assert gpu.backend == "transformer" and gpu.budget_tokens >= 10_000_000
