"""The benchmarks' process-tree memory meter is the library's curation/memwatch.py
(`curate run` records each stage's peak with it). Loaded by path, not by package, so
that it also works in an environment without curation installed (the datatrove venv)."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_curation_memwatch", Path(__file__).resolve().parents[1] / "curation" / "memwatch.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)

TreeMemory = _mod.TreeMemory
tree_memory = _mod.tree_memory
tree_pids = _mod.tree_pids
