"""--runner dask against a real Dask cluster on 127.0.0.1: a scheduler and two workers,
each its own process, started and stopped here. Outputs must equal the local runner's
byte for byte and the manifests' counts must agree."""
from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("dask.distributed")

from pipelines.cli import main  # noqa: E402
from tests.dask_cluster import DaskCluster  # noqa: E402

# the local runner to compare with: in this process (its outputs do not depend on the mode)
LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler with two single-threaded worker processes (tests.dask_cluster)."""
    c = DaskCluster(tmp_path_factory.mktemp("dask_logs"))
    try:
        yield c
    finally:
        c.stop()


def _corpus(path: Path, n: int = 400) -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "neardup_dev.jsonl.gz"
    if shared.exists():
        with gzip.open(shared, "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
    else:   # a fresh clone without ../shared: near duplicates of our own
        base = [f"document {i} about topic {i % 7} with words " + " ".join(f"w{(i * j) % 97}" for j in range(60))
                for i in range(n // 2)]
        lines = [json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(base)]
        lines += [json.dumps({"id": f"e{i}", "text": t + " extra"}) + "\n" for i, t in enumerate(base)]
    lines.append('{"id": "bad", "text": 5}\n')   # a rejected record
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): gzip.decompress(p.read_bytes())
            for p in sorted(out.rglob("*.gz"))}


@pytest.mark.parametrize("command", ["dedup", "filter"])
def test_dask_cluster_matches_local_runner(cluster, tmp_path, command):
    src = _corpus(tmp_path / "in.jsonl")
    local, dask = tmp_path / "local", tmp_path / "dask"
    common = [command, "--input", str(src), "--output-format", "jsonl.gz"]
    assert main([*common, "--output", str(local), *LOCAL]) == 0
    # the scheduler by its address, or by the file it wrote (as under Slurm)
    where = (["--dask_client_address", cluster.address] if command == "dedup" else
             ["--dask_scheduler_file", str(cluster.scheduler_file)])
    assert main([*common, "--output", str(dask), "--runner", "dask", *where]) == 0
    a, b = _outputs(local), _outputs(dask)
    assert a and a == b
    ma = json.loads((local / "manifest.json").read_text())
    mb = json.loads((dask / "manifest.json").read_text())
    assert mb["status"] == "complete" and mb["runner"] == "DaskRunner"
    assert ma["counts"] == mb["counts"]
    assert ma["counters"] == mb["counters"]
    assert mb["counts"]["rejected"] == 1
    if command == "dedup":
        assert mb["counts"]["removed_near"] + mb["counts"]["removed_exact"] > 0


def test_dask_cluster_score_matches_local_runner(cluster, tmp_path):
    from classifiers.fasttext_train import train_classifier
    from tests.test_fasttext_train import SMALL, synthetic_labels
    model = tmp_path / "model"
    train_classifier(synthetic_labels(), model, threshold=3, **SMALL)
    rows = synthetic_labels(600, seed=3)
    src = tmp_path / "in"
    src.mkdir()
    for f in range(3):   # files of both domains, and a rejected record
        lines = [json.dumps({"id": f"d{i}", "text": r["text"], "domain": "ab"[i % 2]}) + "\n"
                 for i, r in enumerate(rows) if i % 3 == f]
        (src / f"part{f}.jsonl").write_text("".join(lines) + '{"id": "bad", "text": 5}\n')
    for cut in (["--keep-top", "0.3", "--keep-top-by", "domain"], ["--min-score", "0.5"]):
        local, dask = tmp_path / f"local{cut[0]}", tmp_path / f"dask{cut[0]}"
        common = ["score", "--input", str(src / "*.jsonl"), "--model", str(model),
                  "--output-format", "jsonl.gz", *cut]
        assert main([*common, "--output", str(local), *LOCAL]) == 0
        assert main([*common, "--output", str(dask), "--runner", "dask", "--dask_client_address", cluster.address]) == 0
        a, b = _outputs(local), _outputs(dask)
        assert len(a) >= 6 and a == b
        ma = json.loads((local / "manifest.json").read_text())
        mb = json.loads((dask / "manifest.json").read_text())
        assert ma["counts"] == mb["counts"] and mb["counts"]["rejected"] == 3
        assert ma["counters"] == mb["counters"]


def test_dask_cluster_runs_the_beam_stages_of_curate_run(cluster, tmp_path):
    """curate run's Beam stages on the cluster, reading local sources and writing into
    the run directory (no gs:// needed: the workers share this disk); every file the
    run writes equals the local runner's run, clocks aside. (Score on the cluster:
    test_dask_cluster_score_matches_local_runner.)"""
    from tests.test_run_command import comparable, small_config, write_config
    data = {**small_config(report=False), "mix": False, "export": False,
            "label": False, "classifier": False, "score": False}
    cfg = write_config(tmp_path, data)
    runs = {}
    for name, flags in (("local", LOCAL), ("dask", ["--runner", "dask", "--dask_client_address", cluster.address])):
        out = tmp_path / "run"
        assert main(["run", str(cfg), "--output", str(out), "--progress", "lines", *flags]) == 0
        runs[name] = out.rename(tmp_path / name)
    for stage in ("dedup", "filter"):
        m = json.loads((runs["dask"] / stage / "manifest.json").read_text())
        assert m["status"] == "complete" and m["runner"] == "DaskRunner"
    a, b = comparable(runs["local"]), comparable(runs["dask"])
    for got in (a, b):
        for rel in [r for r in got if r.endswith("manifest.json")]:
            got[rel].pop("runner")
    assert sorted(a) == sorted(b)
    assert {k for k in a if a[k] != b[k]} == set()


def test_workers_with_other_software_are_refused_before_any_work(cluster, tmp_path, monkeypatch, capsys):
    # this process plays the odd one out; the workers, other processes, report the truth
    import importlib.metadata as md
    real_version = md.version
    real = real_version("curation")
    monkeypatch.setattr(md, "version", lambda d: "0.0.1" if d == "curation" else real_version(d))
    src = _corpus(tmp_path / "in.jsonl", n=20)
    out = tmp_path / "out"
    assert main(["dedup", "--input", str(src), "--output", str(out), "--runner", "dask",
                 "--dask_client_address", cluster.address]) == 1
    err = capsys.readouterr().err
    assert f"runs other software than this process (curation 0.0.1 here, {real} there)" in err
    assert not (out / "documents").exists()


def test_worker_killed_mid_run(tmp_path, capsys):
    """A worker SIGKILLed while it holds results that later tasks need, and runs a task:
    Dask redoes its work on the other worker; the run completes with the local runner's
    outputs and counts, and no temporary of the killed writer is left behind. Then the
    last worker killed mid-run: the run fails with a message and no manifest."""
    import threading
    from dask.distributed import Client
    logs = tmp_path / "logs"
    logs.mkdir()
    c = DaskCluster(logs, workers=2, nanny=False)   # no nanny: the killed worker stays dead
    try:
        src = _corpus(tmp_path / "in.jsonl")
        local, dask = tmp_path / "local", tmp_path / "dask"
        common = ["dedup", "--input", str(src), "--output-format", "jsonl.gz"]
        assert main([*common, "--output", str(local), *LOCAL]) == 0
        done, killed = threading.Event(), {}

        def kill_when_busy(name: str, proc: subprocess.Popen) -> None:
            with Client(c.address, timeout=30) as client:
                victim = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == name)
                while not done.is_set():
                    held = [k[0] if isinstance(k, tuple) else k for k in client.has_what().get(victim, ())]
                    # outputs of a ParDo or a shuffle that other tasks still need
                    if any(k.startswith(("_run_bundle", "gbk-")) for k in held) and client.processing().get(victim):
                        proc.kill()
                        killed["held"] = sorted({k.rsplit("-", 1)[0] for k in held})
                        return
                    time.sleep(0.02)

        t = threading.Thread(target=kill_when_busy, args=("w1", c.workers[1]), daemon=True)
        t.start()
        rc = main([*common, "--output", str(dask), "--runner", "dask", "--dask_client_address", c.address])
        done.set()
        t.join(timeout=30)
        assert killed, "the run ended before the worker could be killed"
        assert c.workers[1].wait(timeout=10) is not None
        assert rc == 0
        assert _outputs(local) == _outputs(dask)
        ma = json.loads((local / "manifest.json").read_text())
        mb = json.loads((dask / "manifest.json").read_text())
        assert mb["status"] == "complete"
        assert ma["counts"] == mb["counts"] and ma["counters"] == mb["counters"]
        assert not [p for p in dask.rglob("*.tmp")]
        assert sorted(mb["files"]) == sorted(ma["files"])

        # the last worker killed too: the run fails saying so, and leaves nothing complete
        done.clear()
        killed.clear()
        t = threading.Thread(target=kill_when_busy, args=("w0", c.workers[0]), daemon=True)
        t.start()
        lost = tmp_path / "lost"
        rc = main([*common, "--output", str(lost), "--runner", "dask", "--dask_client_address",
                   c.address, "--dask_worker_wait", "3"])
        done.set()
        t.join(timeout=30)
        assert killed and rc != 0
        err = capsys.readouterr().err
        assert "has had no worker for 3 s" in err, err[-2000:]
        # the manifest the stage wrote when it began still says so: no reader takes it
        assert json.loads((lost / "manifest.json").read_text())["status"] != "complete"
        assert main(["verify", str(lost)]) != 0
        assert "is not complete" in capsys.readouterr().err
        assert main(["filter", "--input", str(lost / "documents" / "*"), "--output", str(tmp_path / "next")]) != 0
    finally:
        c.stop()
