"""A real run directory for the report's tests: the stage commands, run by hand through
`pipelines.cli.main`, on a small subset of the demo corpus (three domains) plus one
hostile web page, as `curate run` will lay it out (one directory per stage, no
run.json). `build_run_dir(path)` returns the run directory; swap its body for
`curate run` once that exists.

One malformed record is rejected by dedup. The hostile page (markup that would run
script and fetch a URL if the report did not escape it) is short, so the length rule
removes it and the report shows it among that rule's examples."""
from __future__ import annotations

import gzip
import json
import os
from contextlib import contextmanager
from pathlib import Path

from curation.demo import demo_glob

# domain -> documents taken from the head of its demo file: web and docs hold near
# duplicates, code an exact one
SUBSET = {"web": None, "docs": 70, "code": 50}
HOSTILE_ID = "web/0-hostile"
HOSTILE_TEXT = ('<script>alert("owned")</script><img src="http://203.0.113.9/pixel.png" '
                'onerror="alert(1)"> Click <a href="https://203.0.113.9/">here</a> & win')
BEAM_FLAGS = ["--direct_num_workers", "1", "--direct_running_mode", "in_memory"]

FILTERS_YAML = """\
filters:
  - length: {min_words: 20}
  - gopher_repetition
  - c4_quality: {mode: lines}
"""

MIX_YAML = """\
inputs: [{inputs}]
split: {{valid: 0.1, test: 0.1, seed: 0}}
tokenizer_vocab: 1024
constraints: {{min_weight: 0.01, max_epochs: 4}}
proxy: {{backend: ngram, budget_tokens: 100000}}
search: {{rounds: 1, runs_per_round: 2, noise_seeds: 2, final_seeds: 3, final_top: 1, seed: 0}}
fidelity: {{budget_tokens: 200000, params: {{order: 4}}, mixtures: 3}}
baselines: [{{name: uniform}}, {{name: natural}}]
proposers: [{{name: random}}, {{name: claude}}]
claude_model: claude-haiku-4-5
stages: {{dedup: {run}/dedup/manifest.json, filter: {run}/filter/manifest.json, score: {run}/score/manifest.json}}
"""


def write_inputs(out: Path) -> Path:
    """The corpus subset, one JSONL.gz file per domain, under out/inputs."""
    src = Path(demo_glob()).parent
    d = out / "inputs"
    d.mkdir(parents=True, exist_ok=True)
    for domain, limit in SUBSET.items():
        with gzip.open(src / f"{domain}.jsonl.gz", "rt", encoding="utf-8") as f:
            lines = [x for x in f if x.strip()]
        lines = lines[:limit] if limit else lines
        if domain == "web":
            lines.append(json.dumps({"id": HOSTILE_ID, "domain": "web", "text": HOSTILE_TEXT}) + "\n")
        if domain == "code":
            lines.append('{"id": "code/broken", "domain": "code", "text": \n')   # malformed: rejected
        with gzip.open(d / f"{domain}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(lines)
    return d


@contextmanager
def _claude_env():
    """The Claude proposer against the local fake of Anthropic's API."""
    from tests.fake_anthropic import FakeAnthropic
    saved = {k: os.environ.get(k) for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
    with FakeAnthropic() as server:
        os.environ["ANTHROPIC_API_KEY"] = "test-key-not-real"
        os.environ["ANTHROPIC_BASE_URL"] = server.base_url
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def build_run_dir(path: str | os.PathLike) -> Path:
    from pipelines.cli import main

    out = Path(path)
    inputs = write_inputs(out)
    run = out / "run"
    (out / "filters.yaml").write_text(FILTERS_YAML)
    (out / "mix.yaml").write_text(MIX_YAML.format(inputs=run / "score" / "documents", run=run))

    def ok(*argv):
        assert main([str(a) for a in argv]) == 0, argv

    ok("dedup", "--input", inputs, "--output", run / "dedup", *BEAM_FLAGS)
    ok("filter", "--input", run / "dedup" / "documents", "--output", run / "filter",
       "--config", out / "filters.yaml", *BEAM_FLAGS)
    ok("label", "--input", run / "filter" / "documents", "--output", run / "label",
       "--labeler", "heuristic", "--sample", "150")
    ok("train-classifier", "--labels", run / "label" / "labels.jsonl", "--output", run / "classifier",
       "--dim", "16", "--epoch", "5", "--lr", "0.5", "--bucket", "20000")
    ok("score", "--input", run / "filter" / "documents", "--model", run / "classifier",
       "--keep-top", "0.8", "--keep-top-by", "domain", "--output", run / "score", *BEAM_FLAGS)
    with _claude_env():
        ok("mix", "--config", out / "mix.yaml", "--output", run / "mix")
    ok("export", "--mixture", run / "mix" / "mixture.yaml", "--output", run / "export",
       "--tokens", "40000")
    return run


CHROMIUM = "/usr/bin/chromium"


def playwright_or_fail():
    """Playwright's sync API, driving the system Chromium; the test fails (not skips)
    without them: tests/setup.sh installs both."""
    import os

    import pytest
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run tests/setup.sh (it installs the system Chromium "
                    f"and Playwright)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run tests/setup.sh")
    return sync_playwright
