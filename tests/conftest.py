import gzip
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = REPO.parent / "shared" / "corpora"


def shared_corpus(name: str) -> Path:
    path = SHARED_CORPORA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside this clone)")
    return path


def read_jsonl_gz(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture
def fake_anthropic():
    """A running local server that speaks Anthropic's API (tests/fake_anthropic.py)."""
    from tests.fake_anthropic import FakeAnthropic
    with FakeAnthropic() as server:
        yield server



@pytest.fixture
def key_echoing_api(monkeypatch, request):
    """An API that refuses the test module's SECRET key and repeats it in every error
    message, as a careless endpoint might."""
    from tests.fake_anthropic import FakeAnthropic
    with FakeAnthropic(accepted_keys={"another-key"}, echo_credentials=True) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", request.module.SECRET)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        yield server
