"""Rubrics (configs/rubrics) and the labelling sample (classifiers.sampling)."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from classifiers.rubrics import BUILTIN, load_rubric
from classifiers.sampling import SampleStats, sample_documents
from curation.config import ConfigError
from curation.documents import Document


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_rubrics_load(name):
    r = load_rubric(name)
    assert r.name == name and (r.scale.min, r.scale.max) == (0, 5) and r.threshold == 3
    assert "tool" in r.text and len(r.text) > 400
    assert r.is_high(3) and not r.is_high(2)
    assert r.key.startswith(f"{name}@v1:") and r.key != load_rubric(
        [b for b in BUILTIN if b != name][0]).key


@pytest.mark.parametrize("body, field", [
    ("name: x\nscale: {min: 0, max: 5}\nthreshold: 9\ntext: " + "t" * 30, "threshold"),
    ("name: x\nscale: {min: 5, max: 1}\nthreshold: 3\ntext: " + "t" * 30, "scale"),
    ("name: x\nscale: {min: 0, max: 5}\nthreshold: 3\n", "text"),
    ("name: x\nscale: {min: 0, max: 5}\nthreshold: 3\ncolour: red\ntext: " + "t" * 30, "colour"),
    ("- a list", "mapping"),
])
def test_bad_rubrics_name_the_field(tmp_path, body, field):
    path = tmp_path / "r.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_rubric(path)
    assert field in str(e.value) and str(path) in str(e.value)


def test_unknown_rubric():
    with pytest.raises(ConfigError, match="neither a built-in"):
        load_rubric("nope")


def test_an_edited_rubric_has_another_key(tmp_path):
    base = "name: x\nscale: {min: 0, max: 5}\nthreshold: 3\ntext: "
    (tmp_path / "a.yaml").write_text(base + "grade it " * 5)
    (tmp_path / "b.yaml").write_text(base + "grade it well " * 5)
    assert load_rubric(tmp_path / "a.yaml").key != load_rubric(tmp_path / "b.yaml").key


def corpus(n_per: dict[str, int]) -> list[Document]:
    docs = []
    for dom, n in n_per.items():
        for i in range(n):
            docs.append(Document(id=f"{dom}-{i}", text=f"document {i} of the {dom} domain, words",
                                 domain=dom))
    return docs


def test_sample_is_stratified_proportional_and_deterministic():
    docs = corpus({"web": 600, "code": 300, "books": 90, "tiny": 3})
    stats = SampleStats()
    got = sample_documents(docs, 100, seed=3, stats=stats)
    by = {d: sum(x.domain == d for x in got) for d in ("web", "code", "books", "tiny")}
    assert sum(by.values()) == 100 and by["tiny"] >= 1
    assert abs(by["web"] - 60) <= 2 and abs(by["code"] - 30) <= 2 and abs(by["books"] - 9) <= 2
    assert stats.sampled_by_domain == by and stats.seen == len(docs)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert sorted(d.id for d in sample_documents(shuffled, 100, seed=3)) == sorted(d.id for d in got)
    assert sorted(d.id for d in sample_documents(docs, 100, seed=4)) != sorted(d.id for d in got)


def test_equal_allocation_fills_from_the_others():
    got = sample_documents(corpus({"a": 500, "b": 500, "c": 5}), 60, seed=0, allocation="equal")
    by = {d: sum(x.domain == d for x in got) for d in "abc"}
    assert by == {"a": 28, "b": 27, "c": 5} or by == {"a": 27, "b": 28, "c": 5}


def test_exact_duplicates_are_sampled_once():
    docs = corpus({"web": 50})
    dupes = [Document(id=f"copy-{d.id}", text=d.text.upper() + "!!", domain="web") for d in docs]
    stats = SampleStats()
    got = sample_documents(docs + dupes, 1000, seed=0, stats=stats)
    assert len(got) == 50 and stats.duplicates_skipped == 50
    assert all(not d.id.startswith("copy-") for d in got)     # the first occurrence stands


def test_documents_that_share_an_id_are_all_sampled():
    # 1,600 different texts whose ids repeat every 50: a sample of 400 is 400 documents
    words = "river study light city music system garden history data model".split()
    docs = [Document(id=f"row-{i % 50}", domain="web",
                     text=" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + f" {i}")
            for i in range(1600)]
    stats = SampleStats()
    got = sample_documents(docs, 400, seed=0, stats=stats)
    assert len(got) == 400 and len({d.text for d in got}) == 400
    per_id = Counter(d.id for d in got)
    assert len(per_id) == 50 and stats.shared_ids == sum(c for c in per_id.values() if c > 1) > 390
    again = sample_documents(list(reversed(docs)), 400, seed=0)
    assert sorted(d.text for d in again) == sorted(d.text for d in got)


def test_small_and_bad_sizes():
    docs = corpus({"a": 10, "b": 10})
    assert sample_documents(docs, 0) == []
    assert len(sample_documents(docs, 1000)) == 20
    assert {d.domain for d in sample_documents(docs, 2)} == {"a", "b"}
    with pytest.raises(ValueError):
        sample_documents(docs, -1)
    with pytest.raises(ValueError):
        sample_documents(docs, 5, allocation="odd")
