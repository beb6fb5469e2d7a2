"""The import direction of the layers: curation (the library) imports nothing of ours
and never Beam; classifiers may use curation, not pipelines or Beam."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"curation": ("classifiers", "pipelines", "apache_beam"),
             "classifiers": ("pipelines", "apache_beam")}
KNOWN: set[tuple[str, str]] = set()   # (file, module) exceptions: none


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_imports_run_one_way():
    wrong = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name in imports(path):
                if name.split(".")[0] in banned and (rel, name) not in KNOWN:
                    wrong.append(f"{rel} imports {name}")
    assert not wrong, wrong


def test_commands_that_run_no_pipeline_do_not_import_beam(tmp_path):
    """The CLI sits on top: only the commands that run Beam import it (a failing run of
    each other command still goes through its imports)."""
    import subprocess
    import sys

    missing = str(tmp_path / "missing")
    commands = [["report", missing], ["dedup-audit", missing, "--output", str(tmp_path / "a")],
                ["mix", "--config", missing, "--output", str(tmp_path / "m")],
                ["export", "--mix", missing, "--output", str(tmp_path / "e"), "--tokens", "10"],
                ["train-classifier", "--labels", missing, "--output", str(tmp_path / "c")]]
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('BEAM-LOADED' if 'apache_beam' in sys.modules else 'NO-BEAM'))\n"
             "from pipelines.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    for cmd in commands:
        r = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode != 0, (cmd, r.stdout, r.stderr)     # it got as far as failing
        assert "NO-BEAM" in r.stdout, (cmd, r.stdout, r.stderr[-2000:])
