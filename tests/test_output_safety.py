"""What a stage does to its output directory (issue 12): it deletes only what a run
of ours wrote, says why it replaces a finished run, never clears its own input
(however reached), holds a lock while it runs, and checks its files against the
manifest's inventory when it reruns and when the next stage reads them. Real runs
on Beam's local runner, on small real text."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from curation.demo import demo_files
from curation.outputs import LOCK, OutputError, OutputLock, check_inputs_whole, inventory
from pipelines.cli import main

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """Three small JSONL files of real demo text (three output shards)."""
    d = tmp_path_factory.mktemp("src")
    docs = []
    with gzip.open(demo_files()[0], "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line, _ in zip(f, range(30))]
    for k in range(3):
        with open(d / f"part{k}.jsonl", "w", encoding="utf-8") as f:
            for x in docs[k * 10:(k + 1) * 10]:
                f.write(json.dumps({"id": x["id"], "text": x["text"]}) + "\n")
    return d


def curate(*argv: str) -> int:
    return main([*argv, *FAST])


def files_under(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dedup_out(src, tmp_path_factory) -> Path:
    """A finished dedup run (threshold 0.8), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("dedup") / "out"
    assert curate("dedup", "--input", str(src / "*.jsonl"), "--output", str(out),
                  "--threshold", "0.8") == 0
    return out


def test_the_manifest_lists_every_file_with_size_and_checksum(dedup_out):
    m = json.loads((dedup_out / "manifest.json").read_text())
    on_disk = {k for k in files_under(dedup_out) if k != "manifest.json"}
    assert set(m["files"]) == on_disk and len(on_disk) >= 3     # a shard per input file
    for rel, rec in m["files"].items():
        assert rec["bytes"] == (dedup_out / rel).stat().st_size
        assert len(rec["xxh3_128"]) == 32
    assert m["files"] == inventory(str(dedup_out))


# ---------------------------------------------------------------- 1. files that are not ours

def test_a_file_the_tool_did_not_write_is_never_deleted(src, tmp_path, capsys):
    precious = tmp_path / "precious"
    (precious / "documents").mkdir(parents=True)
    (precious / "documents" / "mine.txt").write_text("my notes")
    assert curate("dedup", "--input", str(src / "*.jsonl"), "--output", str(precious)) == 2
    err = capsys.readouterr().err
    assert "mine.txt" in err and "curate: error:" in err
    assert files_under(precious) == {"documents/mine.txt": b"my notes"}


def test_a_file_added_to_a_finished_output_is_refused_not_cleared(dedup_out, src, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(dedup_out, out)
    (out / "documents" / "mine.parquet").write_bytes(b"not ours")
    assert curate("dedup", "--input", str(src / "*.jsonl"), "--output", str(out),
                  "--threshold", "0.7") == 2
    assert "documents/mine.parquet" in capsys.readouterr().err
    assert (out / "documents" / "mine.parquet").read_bytes() == b"not ours"
    # the run's own files are untouched too: nothing is cleared before the check
    assert files_under(out) == {**files_under(dedup_out), "documents/mine.parquet": b"not ours"}


# ---------------------------------------------------------------- 2. changed settings

def test_replacing_a_run_with_other_settings_says_what_changed(dedup_out, src, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(dedup_out, out)
    assert curate("dedup", "--input", str(src / "*.jsonl"), "--output", str(out),
                  "--threshold", "0.7") == 0
    err = capsys.readouterr().err
    assert f"dedup: replacing the complete run in {out}" in err
    assert "config.threshold: 0.8 -> 0.7" in err
    assert json.loads((out / "manifest.json").read_text())["parameters"]["config"]["threshold"] == 0.7


# ---------------------------------------------------------------- 3. a symlink to the input

def test_a_symlinked_output_that_is_the_input_is_refused_before_anything_is_cleared(
        src, tmp_path, capsys):
    d5 = tmp_path / "D5"
    assert curate("filter", "--input", str(src / "*.jsonl"), "--output", str(d5)) == 0
    before = files_under(d5)
    l5 = tmp_path / "L5"
    l5.symlink_to(d5)
    assert curate("filter", "--input", str(d5 / "documents" / "*.parquet"), "--output", str(l5)) == 2
    err = capsys.readouterr().err
    assert "outside the inputs" in err and "through a symlink" in err
    assert files_under(d5) == before
    # one file reached two ways is refused too
    shard = sorted((d5 / "documents").glob("*.parquet"))[0].name
    assert curate("filter", "--input", str(d5 / "documents" / shard),
                  "--input", str(l5 / "documents" / shard), "--output", str(tmp_path / "o")) == 2
    assert "are the same file" in capsys.readouterr().err


# ---------------------------------------------------------------- 4. one run at a time

def test_a_second_run_into_a_held_output_refuses_and_names_the_holder(src, tmp_path):
    """Two real processes. The first is paused (SIGSTOP) as soon as it holds the
    output's lock, so the second surely starts while the first is running."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "filter", "--output", str(out), *FAST]
    first = subprocess.Popen(cmd + ["--input", str(src / "part0.jsonl")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / LOCK
        while first.poll() is None:
            try:
                if json.loads(lock.read_text()).get("pid") == first.pid:
                    break
            except (OSError, ValueError):
                pass
        os.kill(first.pid, signal.SIGSTOP)
        assert first.poll() is None, first.communicate()
        second = subprocess.run(cmd + ["--input", str(src / "*.jsonl")],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"in use by another run (pid {first.pid} on " in second.stderr
        assert "filter --output" in second.stderr      # the holder's command line
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["input"] == 10           # the first run's documents only
    assert not lock.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(src, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                        "command": "filter", "since": "2024-01-01T00:00:00+00:00"}))
    assert curate("filter", "--input", str(src / "*.jsonl"), "--output", str(out)) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock on {out} left by a process that is no longer running (pid {dead.pid}" in err
    assert not (out / LOCK).exists()


def test_the_lock_in_one_process_refuses_a_second_holder(tmp_path):
    with OutputLock(str(tmp_path / "o"), "mix", log=lambda m: None):
        with pytest.raises(OutputError, match=r"in use by another run \(pid"):
            with OutputLock(str(tmp_path / "o"), "mix"):
                pass
    with OutputLock(str(tmp_path / "o"), "mix", log=pytest.fail):   # released: no takeover
        pass


# ---------------------------------------------------------------- 5. a finished output that lost a file

def test_a_rerun_over_an_output_that_lost_a_file_runs_again(dedup_out, src, tmp_path, capsys):
    out = tmp_path / "out"
    assert curate("dedup", "--input", str(src / "*.jsonl"), "--output", str(out),
                  "--threshold", "0.8") == 0
    lost = sorted((out / "documents").glob("*.parquet"))[1]
    lost.unlink()
    assert curate("dedup", "--input", str(src / "*.jsonl"), "--output", str(out),
                  "--threshold", "0.8") == 0
    err = capsys.readouterr().err
    assert "skipping" not in err
    assert f"{lost}: missing" in err
    assert files_under(out).keys() == files_under(dedup_out).keys()


@pytest.mark.parametrize("damage", ["missing", "extra", "changed"])
def test_the_next_stage_refuses_an_output_that_is_not_as_written(dedup_out, tmp_path, capsys, damage):
    out = tmp_path / "dedup"
    shutil.copytree(dedup_out, out)
    shards = sorted((out / "documents").glob("*.parquet"))
    if damage == "missing":
        shards[1].unlink()
        named = shards[1]
    elif damage == "extra":
        named = out / "documents" / "part-00009.parquet"
        shutil.copy(shards[0], named)
    else:
        named = shards[2]
        data = bytearray(named.read_bytes())
        data[len(data) // 2] ^= 0xFF
        named.write_bytes(bytes(data))
    assert curate("filter", "--input", str(out / "documents" / "*.parquet"),
                  "--output", str(tmp_path / "filtered")) == 2
    err = capsys.readouterr().err
    assert str(named) in err and "not as that run wrote it" in err
    assert not (tmp_path / "filtered").exists()


def test_reading_an_unfinished_output_is_refused(dedup_out, tmp_path):
    out = tmp_path / "dedup"
    shutil.copytree(dedup_out, out)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "status": "running"}))
    paths = [str(p) for p in sorted((out / "documents").glob("*.parquet"))]
    with pytest.raises(OutputError, match="unfinished `curate dedup` run"):
        check_inputs_whole([str(out / "documents" / "*.parquet")], paths)
    # the whole output as it was written passes, and so does one named shard
    (out / "manifest.json").write_text(json.dumps(m))
    check_inputs_whole([str(out / "documents" / "*.parquet")], paths)
    check_inputs_whole([paths[0]], paths[:1])


def test_stages_writing_fixed_names_never_overwrite_someone_elses_file(tmp_path):
    from curation.outputs import claim_output
    mine = tmp_path / "m"
    mine.mkdir()
    (mine / "metrics.json").write_text("my own metrics")
    with pytest.raises(OutputError, match="metrics.json, which no run of curate train-classifier"):
        claim_output(str(mine), ("model.bin", "metrics.json"), "metrics.json.done", "train-classifier")
    assert (mine / "metrics.json").read_text() == "my own metrics"
    ours = tmp_path / "o"
    claim_output(str(ours), ("mixture.yaml",), "summary.json", "mix")
    (ours / "mixture.yaml").write_text("from a run that was cut off")
    claim_output(str(ours), ("mixture.yaml",), "summary.json", "mix")   # ours: no refusal
    with pytest.raises(OutputError, match="holds the output of `curate mix`"):
        claim_output(str(ours), ("labels.jsonl",), "summary.json", "label")


def test_temporaries_of_a_killed_writer_are_removed_before_the_inventory(tmp_path, capsys):
    """A worker killed mid-write leaves `.NAME.<uuid>.tmp`; the runner redoes its work
    elsewhere. The manifest, written once all work is done, neither lists nor keeps it."""
    from pipelines.fs import BeamFS
    from pipelines.runs import write_manifest
    out = tmp_path / "out"
    (out / "documents").mkdir(parents=True)
    (out / "documents" / "part-00000.jsonl.gz").write_bytes(b"kept")
    orphan = out / "documents" / ".part-00000.jsonl.gz.0123456789abcdef.tmp"
    orphan.write_bytes(b"half")
    other = out / "documents" / ".notes.tmp"     # not a temporary of ours: not touched
    other.write_bytes(b"x")
    manifest = write_manifest(BeamFS(), str(out), {"status": "complete"})
    assert not orphan.exists() and other.exists()
    files = json.loads(Path(manifest).read_text())["files"]
    assert sorted(files) == ["documents/.notes.tmp", "documents/part-00000.jsonl.gz"]
    assert "a temporary whose writer died" in capsys.readouterr().err
