"""What the command line does with mistakes: stray arguments, typos, a file as output,
total rejection, --strict, unwritable outputs, Ctrl-C and kill -9. Each case was once a
silent loss, a misleading message or a page of Beam traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.config import ConfigError
from curation.runconfig import load_run_config
from pipelines.cli import main

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def docs(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document number {i} says something of its own, {i * 7}"}
            for i in range(start, start + n)]


def curate(*args: str, **kw) -> subprocess.CompletedProcess:
    """`curate` as a user runs it: its own process, so worker output is seen too."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True,
                          text=True, timeout=300, **kw)


# ---------------------------------------------------------------- arguments

def test_a_second_file_from_an_unquoted_glob_is_an_error(tmp_path, capsys):
    a = write_jsonl(tmp_path / "web_1.jsonl", docs(3))
    b = write_jsonl(tmp_path / "web_2.jsonl", docs(3, 3))
    out = tmp_path / "out"
    assert main(["dedup", "--input", str(a), str(b), "--output", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert str(b) in err and "quote the glob" in err and "repeat --input" in err
    assert not out.exists()


def test_a_misspelt_flag_is_named_before_anything_else(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", docs(3))
    assert main(["dedup", "--input", str(a), "--ouput", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown option --ouput" in err and "did you mean --output?" in err
    assert "needs --output" not in err
    # curate run: the typo, not "config out/x not found"
    assert main(["run", "--ouput", "out/x", "cfg.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown option --ouput" in err and "not found" not in err


def test_dask_flags_without_the_dask_runner_are_refused(tmp_path, capsys):
    # else the run would go to the local runner, the cluster named and ignored
    a = write_jsonl(tmp_path / "a.jsonl", docs(3))
    out = tmp_path / "out"
    assert main(["dedup", "--input", str(a), "--output", str(out),
                 "--dask_client_address", "tcp://127.0.0.1:8786"]) == 2
    assert "--dask_client_address is a flag of --runner dask" in capsys.readouterr().err
    assert not out.exists()
    pytest.importorskip("dask.distributed")
    assert main(["dedup", "--input", str(a), "--output", str(out), "--runner", "dask",
                 "--dask_worker_wiat", "3"]) == 2
    assert "did you mean --dask_worker_wait?" in capsys.readouterr().err


def test_beam_options_still_pass(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", docs(4))
    out = tmp_path / "out"
    assert main(["dedup", "--input", str(a), "--output", str(out),
                 "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["kept"] == 4


def test_output_naming_a_file_is_a_clear_error(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", docs(3))
    f = tmp_path / "results.txt"
    f.write_text("mine")
    assert main(["filter", "--input", str(a), "--output", str(f), *FAST]) == 2
    assert f"--output {f} is a file" in capsys.readouterr().err
    assert f.read_text() == "mine"


def test_report_on_one_stage_folder_is_refused(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", docs(3))
    out = tmp_path / "run" / "filter"
    assert main(["filter", "--input", str(a), "--output", str(out), "--preset", "minimal", *FAST]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "one stage's output, not a run directory" in err and str(out.parent) in err
    assert not (out / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2


def test_run_config_errors_are_listed_together(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("demo: true\noutptu: x\ndedup:\n  threshhold: 0.7\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_run_config(str(cfg))
    msg = str(e.value)
    assert "outptu" in msg and "dedup.threshhold" in msg


# ---------------------------------------------------------------- total rejection

def test_every_record_rejected_is_a_failure_with_the_likely_fix(tmp_path, capsys):
    csv = tmp_path / "export.jsonl"
    csv.write_text("id,text\n1,hello world\n2,second row\n", encoding="utf-8")
    assert main(["dedup", "--input", str(csv), "--output", str(tmp_path / "o1"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "every one of the 3 input records was rejected" in err and "not JSON Lines" in err

    body = write_jsonl(tmp_path / "body.jsonl", [{"id": "a", "body": "some text"},
                                                 {"id": "b", "body": "more text"}])
    assert main(["filter", "--input", str(body), "--output", str(tmp_path / "o2"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "--text-field" in err and "body" in err
    # the outputs are still there to look at
    assert (tmp_path / "o2" / "manifest.json").exists()
    # with the fix it passes
    assert main(["filter", "--input", str(body), "--output", str(tmp_path / "o3"),
                 "--text-field", "body", "--preset", "minimal", *FAST]) == 0


# ---------------------------------------------------------------- one line, not a traceback

def test_strict_prints_one_line(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": "a", "text": "fine words here"}\nnot json\n', encoding="utf-8")
    r = curate("dedup", "--input", str(bad), "--output", str(tmp_path / "o"), "--strict",
               "--direct_num_workers", "1")
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"curate: bad input (--strict): {bad}:2: malformed_json "
        f"(invalid literal, expected 'null': line 1 column 1 (char 0))"]


def _immutable(path: Path) -> bool:
    return (shutil.which("chattr") is not None
            and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0)


def test_unwritable_output_is_one_line_naming_the_path(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", docs(3))
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
    elif not _immutable(ro):
        pytest.skip("root without chattr +i: no way to make a directory unwritable here")
    try:
        r = curate("dedup", "--input", str(a), "--output", str(ro / "out"), "--direct_num_workers", "1")
    finally:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
        ro.chmod(0o755)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(ro / "out") in lines[0] and "not permitted" in lines[0].lower() \
        or "permission denied" in lines[0].lower()


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here to fill")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_disk_full_is_one_line(tmp_path, tiny_disk):
    import random
    rng = random.Random(7)
    big = write_jsonl(tmp_path / "big.jsonl",
                      [{"id": str(i), "text": " ".join(f"w{rng.randrange(10**6)}" for _ in range(300))}
                       for i in range(600)])
    r = curate("dedup", "--input", str(big), "--output", str(tiny_disk / "out"),
               "--direct_num_workers", "1")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(tiny_disk / "out") in lines[0]


# ---------------------------------------------------------------- signals and workers

def _workers_of(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if b"pipelines.worker_main" in cmd and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(d.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _start_with_workers(tmp_path) -> tuple[subprocess.Popen, list[int]]:
    corpus = write_jsonl(tmp_path / "c.jsonl",
                         [{"id": str(i), "text": " ".join(f"w{(i * 17 + j) % 5003}" for j in range(400))}
                          for i in range(20000)])
    p = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "dedup", "--input", str(corpus),
                          "--output", str(tmp_path / "out"), "--direct_num_workers", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # as from a terminal: a test run started in the background has
                         # SIGINT ignored, and that would be inherited
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2 and p.poll() is None:
        time.sleep(0.5)
        workers = _workers_of(p.pid)
    if len(workers) < 2:
        p.kill()
        pytest.fail(f"the run never had two workers: {p.communicate()[1][-2000:]}")
    return p, workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_with_a_killed_curate(tmp_path):
    p, workers = _start_with_workers(tmp_path)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.5)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "worker processes outlived the killed curate"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_is_one_line(tmp_path):
    p, workers = _start_with_workers(tmp_path)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "curate: interrupted; outputs of the unfinished stage are incomplete and a rerun of "
        "the same command redoes it"]
    m = tmp_path / "out" / "manifest.json"
    assert not m.exists() or json.loads(m.read_text())["status"] != "complete"
