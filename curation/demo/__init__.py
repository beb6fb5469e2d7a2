"""The demo corpus shipped inside the package: small samples of redistributable
real text (see NOTICE.md), one JSONL.gz file per domain."""
from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent


def demo_files() -> list[str]:
    return sorted(str(p) for p in DEMO_DIR.glob("*.jsonl.gz"))


def demo_glob() -> str:
    return str(DEMO_DIR / "*.jsonl.gz")
