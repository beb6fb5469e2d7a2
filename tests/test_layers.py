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
