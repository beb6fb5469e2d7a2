"""`curate run` / `curate demo`: config validation, sources with domains, chaining,
resume after a kill, byte-identical reruns."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml

from curation.config import ConfigError
from curation.demo import DEMO_DIR
from curation.io import expand_sources, read_documents
from curation.progress import Progress
from curation.runconfig import load_run_config
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST_BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
# keys whose values are clocks or how much work this run did, not results
VOLATILE = {"elapsed_s", "seconds", "timings_s", "finished_at", "started_at", "argv", "mtime",
            "proxy_runs_computed", "fidelity_runs_computed", "timings"}


def small_config(report: bool = True) -> dict:
    d = DEMO_DIR
    return {
        "seed": 3,
        "sources": [
            {"input": str(d / "books.jsonl.gz"), "domain": "books"},
            {"input": [str(d / "speeches.jsonl.gz")], "domain": "speeches"},
            {"input": str(d / "web.jsonl.gz")},                   # domain from the records
            {"input": str(d / "wiki.jsonl.gz"), "domain": "encyclopedia"},
        ],
        "dedup": {"threshold": 0.8, "num_perm": 64},
        "filter": {"preset": "minimal", "removed_sample": 5},
        "label": {"labeler": "heuristic", "sample": 200},
        "classifier": {"dim": 8, "epoch": 5, "lr": 0.5},
        "score": {"keep_top": 0.9},
        "mix": {"proxy": {"budget_tokens": 100000},
                "search": {"rounds": 1, "runs_per_round": 2, "noise_seeds": 2, "final_seeds": 3},
                "fidelity": {"budget_tokens": 200000, "mixtures": 2},
                "baselines": [{"name": "uniform"}, {"name": "natural"}],
                "proposers": [{"name": "random"}, {"name": "claude"}]},
        "export": {"tokens": 50000, "shard_docs": 100},
        "report": report,
    }


def write_config(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def comparable(root: Path) -> dict[str, object]:
    """Every output file of a run: bytes, or for JSON/JSONL records the content with the
    clock readings taken out. run.json and the label store are records of the run itself."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel in ("run.json",) or rel.startswith("cache/"):
            continue
        if p.suffix == ".json":
            out[rel] = _strip(json.loads(p.read_text("utf-8")))
        elif rel == "report.md":      # the report's time-per-stage section is its last
            out[rel] = p.read_text("utf-8").split("\n## Time per stage\n")[0]
        elif rel == "report.html":
            out[rel] = re.sub(r'<section id="timings">.*?</section>', "", p.read_text("utf-8"),
                              flags=re.S)
        elif p.name == "proxy_cache.jsonl":
            out[rel] = [_strip(json.loads(line)) for line in p.read_text("utf-8").splitlines()]
        else:
            out[rel] = p.read_bytes()
    return out


# ------------------------------------------------------------------ config


def test_config_errors_name_the_field(tmp_path):
    bad = small_config()
    bad["dedup"]["threshold"] = 2
    bad["filter"]["inputs"] = ["x"]
    bad["mix"]["search"]["rounds"] = 0
    bad["export"] = {"tokens": 0}
    bad["classifier"]["dimm"] = 3
    with pytest.raises(ConfigError) as e:
        load_run_config(write_config(tmp_path, bad))
    msg = str(e.value)
    for field in ("dedup.threshold", "filter.inputs: set by curate run", "mix.search.rounds",
                  "export.tokens", "classifier.dimm"):
        assert field in msg, msg
    assert str(tmp_path / "run.yaml") in msg


@pytest.mark.parametrize("change, words", [
    ({"score": False}, "label, classifier and score run together"),
    ({"mix": False}, "export samples the chosen mixture"),
    ({"demo": True}, "not both"),
    ({"sources": [{"input": "x", "domain": "a/b"}]}, "sources.0.domain"),
    ({"label": {"labeler": "claude", "fallback": "maybe"}}, "label.fallback"),
    ({"stages": {}}, "stages"),
    ({"dedup": {"against": ["idx"]}}, "dedup.against: not taken by curate run yet"),
])
def test_config_rejects(tmp_path, change, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_run_config(write_config(tmp_path, {**small_config(), **change}))


def test_config_is_validated_before_anything_runs(tmp_path, capsys):
    bad = {**small_config(), "mix": {"proxy": {"backend": "lstm"}}}
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path, bad)), "--output", str(out)]) == 2
    assert "mix.proxy.backend" in capsys.readouterr().err
    assert not out.exists()


def test_demo_config_is_valid():
    from curation.runconfig import demo_config_path
    cfg = load_run_config(demo_config_path())
    assert cfg.demo and cfg.report and all(cfg.enabled(s) for s in ("dedup", "mix", "export"))


def test_sources_give_their_files_a_domain(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"id": "1", "text": "one", "domain": "web"}\n{"id": "2", "text": "two"}\n')
    b = tmp_path / "b.jsonl"
    b.write_text('{"id": "3", "text": "three", "domain": "web"}\n')
    files = expand_sources([([str(a)], "forum"), ([str(b)], None)])
    assert [(Path(f.path).name, f.domain) for f in files] == [("a.jsonl", "forum"), ("b.jsonl", None)]
    docs = [d for f in files for d in read_documents(f) if hasattr(d, "text")]
    assert [(d.id, d.domain) for d in docs] == [("1", "forum"), ("2", "forum"), ("3", "web")]
    with pytest.raises(ValueError, match="two sources with different domains"):
        expand_sources([([str(a)], "forum"), ([str(tmp_path / "*.jsonl")], "news")])


def test_progress_lines_and_bars():
    buf = io.StringIO()
    p = Progress(buf)              # not a terminal: lines
    with p.task("label", total=3, unit="documents") as t:
        t.advance(3)
    assert "label: started (3 documents)" in buf.getvalue()
    assert "label: 3 of 3 documents done in" in buf.getvalue()
    bars = io.StringIO()
    p = Progress(bars, bars=True)
    with p.task("mix: proxy runs", unit="runs") as t:
        t.advance(5)
    p.close()
    assert "mix: proxy runs" in bars.getvalue() and "5" in bars.getvalue()


# ------------------------------------------------------------------ whole runs


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run; kept at a different path so the kill test can use RUN."""
    base = tmp_path_factory.mktemp("runs")
    cfg = write_config(base, small_config())
    run_dir = base / "run"
    with mock.patch.dict(os.environ):
        os.environ.pop("ANTHROPIC_API_KEY", None)      # the fallbacks are part of what is tested
        assert main(["run", str(cfg), "--output", str(run_dir), "--progress", "lines", *FAST_BEAM]) == 0
    ref = base / "reference"
    shutil.copytree(run_dir, ref)
    return base, cfg, run_dir, ref


def test_run_chains_the_stages(reference_run):
    base, cfg, run_dir, ref = reference_run
    doc = json.loads((ref / "run.json").read_text())
    stages = {s["name"]: s for s in doc["stages"]}
    assert doc["status"] == "complete"
    assert [s for s in stages if stages[s]["status"] == "complete"] == \
        ["dedup", "filter", "label", "train", "score", "mix", "export", "report"]
    assert stages["report"]["status"] == "complete"
    report = json.loads((ref / "report.json").read_text())
    assert report["funnel"] and report["mixture"]
    # what one stage kept is what the next read, and every manifest balances
    assert [lk["ok"] for lk in doc["chain"]] == [True, True]
    for s in ("dedup", "filter", "score"):
        m = json.loads((ref / s / "manifest.json").read_text())
        assert m["status"] == "complete" and m["balance"]["ok"], s
    # sources' domains reach the mixture (wiki's files were given another name)
    mix = yaml.safe_load((ref / "mix" / "mixture.yaml").read_text())
    assert set(mix["weights"]) == {"books", "speeches", "web", "encyclopedia"}
    # the fallbacks are said, with the reason
    assert any("Claude proposer skipped" in f and "ANTHROPIC_API_KEY" in f for f in doc["fallbacks"])
    label = json.loads((ref / "label" / "summary.json").read_text())
    assert label["labeler"] == "heuristic"
    # every stage's peak memory (the process tree: this Python process at least) and CPU
    for name, s in stages.items():
        mem = s["peak_memory_mib"]
        assert 50 < mem["pss"] <= mem["rss"] and s["cpu_s"] > 0, name
    t = report["timings"]["stages"]
    assert t["dedup"]["peak_pss_mib"] == stages["dedup"]["peak_memory_mib"]["pss"]
    assert "peak memory (MiB)" in (ref / "report.md").read_text()


def test_rerun_skips_complete_stages_and_redoes_changed_ones(reference_run, tmp_path):
    base, cfg, run_dir, ref = reference_run
    run2 = tmp_path / "run2"
    shutil.copytree(ref, run2)
    assert main(["run", str(cfg), "--output", str(run2), "--progress", "lines", *FAST_BEAM]) == 0
    doc = json.loads((run2 / "run.json").read_text())
    assert {s["name"]: s["status"] for s in doc["stages"]} == {
        "dedup": "reused", "filter": "reused", "label": "reused", "train": "reused",
        "score": "reused", "mix": "reused", "export": "reused", "report": "complete"}
    # a changed export setting redoes the export only
    data = yaml.safe_load(cfg.read_text())
    data["export"]["tokens"] = 40000
    cfg2 = write_config(tmp_path, data, "changed.yaml")
    assert main(["run", str(cfg2), "--output", str(run2), "--progress", "lines", *FAST_BEAM]) == 0
    doc = json.loads((run2 / "run.json").read_text())
    status = {s["name"]: s["status"] for s in doc["stages"]}
    assert status["mix"] == "reused" and status["export"] == "complete"
    assert json.loads((run2 / "export" / "manifest.json").read_text())["tokens_asked"] == 40000
    # a stage whose output went missing is redone, and what follows it too
    shutil.rmtree(run2 / "filter" / "documents")
    (run2 / "filter" / "manifest.json").unlink()
    assert main(["run", str(cfg2), "--output", str(run2), "--progress", "lines", *FAST_BEAM]) == 0
    status = {s["name"]: s["status"] for s in json.loads((run2 / "run.json").read_text())["stages"]}
    assert status["dedup"] == "reused" and status["filter"] == "complete"


def _run_until_killed(cfg: Path, run_dir: Path, stage: str, ready) -> dict:
    """Start `curate run`, SIGKILL it (and its workers) once `stage` is running and
    `ready()` holds; returns run.json as the killed run left it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(cfg), "--output",
                             str(run_dir), "--progress", "lines", *FAST_BEAM],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                doc = json.loads((run_dir / "run.json").read_text())
            except (OSError, ValueError):
                doc = {}
            rec = next((s for s in doc.get("stages", []) if s["name"] == stage), None)
            if rec and rec["status"] == "running" and ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return json.loads((run_dir / "run.json").read_text())
            time.sleep(0.02)
        raise AssertionError(f"stage {stage} never ran")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_killed_run_resumes_to_the_same_outputs(reference_run):
    """Killed in the middle of a Beam stage, then in the middle of the mixture search,
    then resumed: the outputs equal the uninterrupted run's, byte for byte."""
    base, cfg, run_dir, ref = reference_run
    shutil.rmtree(run_dir)
    t_dedup = time.time()
    doc = _run_until_killed(cfg, run_dir, "dedup", lambda: time.time() - t_dedup > 1)
    dedup = next(s for s in doc["stages"] if s["name"] == "dedup")
    assert dedup["status"] == "running" and not (run_dir / "dedup" / "manifest.json").exists()

    cache = run_dir / "mix" / "proxy_cache.jsonl"
    doc = _run_until_killed(cfg, run_dir, "mix", lambda: cache.exists())
    status = {s["name"]: s["status"] for s in doc["stages"]}
    assert status["dedup"] == "complete" and status["mix"] == "running"
    assert not (run_dir / "mix" / "summary.json").exists()
    done_before = len(cache.read_text().splitlines())
    assert done_before >= 1

    assert main(["run", str(cfg), "--output", str(run_dir), "--progress", "lines", *FAST_BEAM]) == 0
    doc = json.loads((run_dir / "run.json").read_text())
    status = {s["name"]: s["status"] for s in doc["stages"]}
    assert status["dedup"] == "reused" and status["mix"] == "complete"
    summary = json.loads((run_dir / "mix" / "summary.json").read_text())
    assert summary["proxy_runs"] - summary["proxy_runs_computed"] >= done_before
    a, b = comparable(ref), comparable(run_dir)
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k] != b[k]]
    assert not different, different
    for s in ("dedup", "filter", "score"):
        assert json.loads((run_dir / s / "manifest.json").read_text())["balance"]["ok"]
    assert all(lk["ok"] for lk in doc["chain"])


def test_same_config_and_seed_give_identical_outputs(reference_run, tmp_path):
    """Two uninterrupted runs of one config at one path: byte-identical outputs."""
    base, cfg, run_dir, ref = reference_run
    again = base / "run"
    if again.exists():
        shutil.rmtree(again)
    assert main(["run", str(cfg), "--output", str(again), "--progress", "lines", *FAST_BEAM]) == 0
    a, b = comparable(ref), comparable(again)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert any(k.startswith("export/") and k.endswith(".jsonl.gz") for k in a)
    assert "classifier/model.bin" in a


def test_demo_help_and_run_help():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "RUN_DIR" in out.stdout
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "config" in out.stdout


def test_run_with_claude_through_the_fake_server(fake_anthropic, tmp_path, monkeypatch):
    """With a key, Claude labels and proposes (the real SDK against the loopback fake):
    no fallback, the cost is in run.json and the report, and the key is in no output."""
    key = "test-key-run-secret-not-a-real-key"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    data = small_config()
    data["label"] = {"labeler": "claude", "sample": 60, "mode": "messages", "max_usd": 1}
    data["mix"]["proposers"] = [{"name": "claude"}]
    run_dir = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path, data)), "--output", str(run_dir),
                 "--progress", "lines", *FAST_BEAM]) == 0
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["fallbacks"] == []
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["label"]["cost_usd"] > 0 and stages["label"]["api_tokens"]["input"] > 0
    assert stages["mix"]["cost_usd"] > 0
    label = json.loads((run_dir / "label" / "summary.json").read_text())
    assert label["labeler"] == "claude" and label["counts"]["labelled"] == label["counts"]["sampled"]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["cost"]["total_usd"] == pytest.approx(
        stages["label"]["cost_usd"] + stages["mix"]["cost_usd"], abs=1e-6)
    assert report["mixture"]["claude"]["status"] == "ran" and report["mixture"]["claude"]["rationales"]
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []


def test_curate_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """The shipped demo config, whole, as `curate demo` runs it (in-process runner)."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--progress", "lines", *FAST_BEAM]) == 0
    err = capsys.readouterr().err
    assert "fallback: label: heuristic labeler instead of Claude" in err
    assert "fallback: mix: Claude proposer skipped" in err
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "complete" and all(lk["ok"] for lk in doc["chain"])
    report = json.loads((out / "report.json").read_text())
    assert all(c["ok"] for c in report["checks"]), [c for c in report["checks"] if not c["ok"]]
    mix = yaml.safe_load((out / "mix" / "mixture.yaml").read_text())
    assert len(mix["weights"]) == 8          # every demo domain survives to the mixture
    assert (out / "report.html").stat().st_size > 50_000
    # the end of the run: the fidelity result, then the chosen weights with their intervals
    lines = err.splitlines()
    i = lines.index(f"demo: mix: {mix['fidelity']['message']}")
    assert lines[i + 1].startswith("demo: mix: chose ") and "95% CI" in lines[i + 2]
    assert mix["fidelity"]["larger_proxy"] == "ngram (order 4) at 2,000,000 tokens"
    # the web domain came in as a crawl: extraction, URL blocking, PII and decontamination
    dedup = json.loads((out / "dedup" / "manifest.json").read_text())["counts"]
    assert dedup["rejected_by_cause"] == {"empty_extraction": 1, "not_html": 2}
    assert dedup["warc_records_skipped"] == 71               # warcinfo and 70 requests
    filt = json.loads((out / "filter" / "manifest.json").read_text())
    assert filt["removed_by_reason"]["url:blocked_domain"] > 0
    assert filt["removed_by_reason"]["decontaminate:contaminated"] == 2
    assert all(filt["tallies"][f"pii.{k}"] > 0 for k in ("email", "ip_address", "phone"))
    crawl = report["crawl"]
    assert crawl["extraction"]["responses_rejected"] == {"empty_extraction": 1, "not_html": 2}
    assert all(crawl["pii_examples"][k] for k in ("email", "ip_address", "phone"))
    web = report["funnel"]["domains"]["web"]["documents"]
    assert web["extraction:not_html"] == 2 and web["extraction:empty_extraction"] == 1
