"""`curate run` with its data elsewhere (data_output, sources on a remote scheme): what a
Dataflow run does with gs://, on a local stand-in (tests/remote_fs.py), plus the
Dataflow job of the first stage built offline with --dry_run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from curation.demo import DEMO_DIR
from pipelines.cli import main
from tests.remote_fs import PREFIX, ROOT
from tests.test_run_command import FAST_BEAM, small_config, write_config

DOMAINS = {"books": "books", "speeches": "speeches", "web": None, "wiki": "encyclopedia"}


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    root = tmp_path / "bucket"
    (root / "src").mkdir(parents=True)
    for name in DOMAINS:
        shutil.copy(DEMO_DIR / f"{name}.jsonl.gz", root / "src" / f"{name}.jsonl.gz")
    ROOT[:] = [str(root)]
    yield root
    ROOT.clear()


def remote_config(data_output: str) -> dict:
    data = small_config()
    data["sources"] = [{"input": f"{PREFIX}src/{name}.jsonl.gz", **({"domain": d} if d else {})}
                       for name, d in DOMAINS.items()]
    data["data_output"] = data_output
    return data


def test_run_with_its_data_elsewhere(bucket, tmp_path):
    """The Beam stages read and write the remote location; the driver stages read it;
    the run directory keeps the records and the report; the results equal a local run's."""
    local_cfg = write_config(tmp_path, small_config(), "local.yaml")
    assert main(["run", str(local_cfg), "--output", str(tmp_path / "local"), "--progress",
                 "lines", *FAST_BEAM]) == 0
    cfg = write_config(tmp_path, remote_config(f"{PREFIX}data/run"), "remote.yaml")
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--output", str(run), "--progress", "lines", *FAST_BEAM]) == 0

    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "complete" and all(lk["ok"] for lk in doc["chain"])
    data = bucket / "data" / "run"
    for stage in ("dedup", "filter", "score"):
        assert list((data / stage / "documents").iterdir()), stage          # data: remote
        assert not (run / stage / "documents").exists(), stage             # not copied back
        m = json.loads((run / stage / "manifest.json").read_text())        # records: local
        assert m["status"] == "complete" and m["balance"]["ok"]
        assert m["parameters"]["files"][0]["path"].startswith(PREFIX)
    assert list((run / "dedup" / "clusters").iterdir()) and list((run / "filter" / "removed").iterdir())
    assert (data / "classifier" / "model.bin").read_bytes() == (run / "classifier" / "model.bin").read_bytes()

    # the same documents, so the same labels, model, mixture and export as the local run
    local = tmp_path / "local"
    for rel in ("label/labels.jsonl", "classifier/model.bin", "mix/candidates.csv",
                "export/books/part-00000.jsonl.gz"):
        assert (run / rel).read_bytes() == (local / rel).read_bytes(), rel
    assert yaml.safe_load((run / "mix" / "mixture.yaml").read_text())["weights"] == \
        yaml.safe_load((local / "mix" / "mixture.yaml").read_text())["weights"]

    # the report renders from the records; what needs the texts says why it is missing
    report = json.loads((run / "report.json").read_text())
    local_report = json.loads((local / "report.json").read_text())
    f, lf = report["funnel"], local_report["funnel"]
    assert f["total"]["documents"] == lf["total"]["documents"]
    assert f["total"]["tokens"]["kept"] is None and f["total"]["tokens"]["input"] is None
    assert any("Kept tokens are not available" in n for n in f["notes"])
    assert any("Input tokens are not available" in n for n in f["notes"])

    # a rerun reuses every stage: the records in the run directory mark them complete
    assert main(["run", str(cfg), "--output", str(run), "--progress", "lines", *FAST_BEAM]) == 0
    status = {s["name"]: s["status"] for s in json.loads((run / "run.json").read_text())["stages"]}
    assert [k for k, v in status.items() if v != "reused"] == ["report"]


def test_remote_runner_needs_remote_data(bucket, tmp_path, capsys):
    flags = ["--runner", "DataflowRunner", "--project", "my-project-123", "--region",
             "us-central1", "--temp_location", "gs://my-bucket-123/tmp"]
    cfg = write_config(tmp_path, small_config())
    assert main(["run", str(cfg), "--output", str(tmp_path / "a"), *flags]) == 2
    assert "give data_output" in capsys.readouterr().err
    cfg = write_config(tmp_path, {**small_config(), "data_output": f"{PREFIX}data"}, "b.yaml")
    assert main(["run", str(cfg), "--output", str(tmp_path / "b"), *flags]) == 2
    assert "cannot read local sources" in capsys.readouterr().err


def test_dataflow_dry_run_builds_the_first_job(bucket, tmp_path, capsys):
    cfg = write_config(tmp_path, remote_config(f"{PREFIX}data/run"))
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--output", str(run), "--runner", "DataflowRunner",
                 "--project", "my-project-123", "--region", "us-central1",
                 "--temp_location", "gs://my-bucket-123/tmp", "--no_save_main_session",
                 "--dry_run=True"]) == 0
    assert "the dedup job was built and not submitted" in capsys.readouterr().err
    doc = json.loads((run / "run.json").read_text())
    status = {s["name"]: s["status"] for s in doc["stages"]}
    assert doc["status"] == "dry_run" and status["dedup"] == "dry_run"
    assert "filter" not in status
    assert not (bucket / "data" / "run" / "dedup" / "documents").exists()


def test_label_mix_and_export_commands_read_remote_inputs(bucket, tmp_path):
    """The stage commands themselves take gs://-style inputs (through Beam's filesystems)."""
    src = [f"{PREFIX}src/{name}.jsonl.gz" for name in ("books", "speeches", "wiki")]
    label = tmp_path / "label"
    assert main(["label", *sum((["--input", s] for s in src), []), "--output", str(label),
                 "--labeler", "heuristic", "--sample", "30"]) == 0
    rows = [json.loads(x) for x in (label / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {r["domain"] for r in rows} == {"books", "speeches", "wiki"}
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(yaml.safe_dump({
        "sources": {"books": src[0], "speeches": [src[1]], "wiki": src[2]},
        "proxy": {"budget_tokens": 50000},
        "search": {"rounds": 1, "runs_per_round": 1, "noise_seeds": 2, "final_seeds": 3},
        "fidelity": {"enabled": False},
        "baselines": [{"name": "uniform"}, {"name": "natural"}], "proposers": [{"name": "random"}]}))
    mix = tmp_path / "mix"
    assert main(["mix", "--config", str(cfg), "--output", str(mix)]) == 0
    out = tmp_path / "export"
    assert main(["export", "--mixture", str(mix / "mixture.yaml"), "--output", str(out),
                 "--tokens", "20000"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["tokens_achieved"] >= 20000 and set(m["domains"]) == {"books", "speeches", "wiki"}
