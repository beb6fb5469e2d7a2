"""`curate export --format megatron|olmo`: token files a trainer reads, checked with the
trainers' own readers where they are installed (megatron-core's IndexedDataset and
blend parsing, ai2-olmo-core's source mixture and numpy dataset: the `megatron` and
`olmo` extras, which tests/setup.sh installs) and by the formats' layout otherwise;
and where export stops (the total within one document of N)."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import yaml

from curation.config import ConfigError, ExportConfig
from curation.mixture.export import domain_asks, export_mixture
from pipelines.cli import main
from tests.mixture_corpus import demo_records, write_export_mixture

DOMAINS = {"books": 10, "web": 14, "reference": 40}     # documents from each demo domain
# a text holding the EOD's spelling: it must stay text, not end its document early
SPELLED_EOD = {"id": "web-eod-text", "text": "a page that quotes <|endoftext|> and </s> in its body"}


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    """A corpus (a JSONL per domain), its stated tokenizer and a mixture.yaml; returns the
    mixture.yaml's path."""
    recs = demo_records()
    rows = {d: [{"id": r["id"], "text": r["text"]} for r in recs[d][:n]] for d, n in DOMAINS.items()}
    rows["web"].append(SPELLED_EOD)
    return write_export_mixture(tmp_path_factory.mktemp("tokmix"), rows,
                                {"books": 0.3, "reference": 0.25, "web": 0.45}, trained_on="export-tokenized")


def texts_by_id(mixture: Path) -> dict[str, str]:
    out = {}
    for pattern in yaml.safe_load(mixture.read_text())["settings"]["data"]["sources"].values():
        for path in sorted(Path(pattern).parent.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                assert r["id"] not in out            # the check below looks texts up by id
                out[r["id"]] = r["text"]
    return out


def documents(out: Path, domain: str) -> list[dict]:
    with gzip.open(out / domain / "documents.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f]


def expected_ids(tok: tokenizers.Tokenizer, text: str, eod: int) -> list[int]:
    """What the files must hold for a document: its ids, encoded alone, then the EOD."""
    tok.encode_special_tokens = True
    return tok.encode(text, add_special_tokens=False).ids + [eod]


def stated(mixture: Path) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(mixture.parent / "tokenizer.json"))


def without_timing(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "elapsed_s"}


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def read_megatron(prefix: str) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype code, lengths, pointers, document indices, .bin as that dtype), parsed by the
    layout docs/mixture.md states (for where megatron-core is not installed)."""
    raw = Path(prefix + ".idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n, ndoc = struct.unpack("<QBQQ", raw[9:34])
    assert version == 1
    lengths = np.frombuffer(raw, "<i4", n, 34)
    pointers = np.frombuffer(raw, "<i8", n, 34 + 4 * n)
    docs = np.frombuffer(raw, "<i8", ndoc, 34 + 12 * n)
    assert len(raw) == 34 + 12 * n + 8 * ndoc
    dtype = {8: "<u2", 4: "<i4"}[code]
    return code, lengths, pointers, docs, np.fromfile(prefix + ".bin", dtype)


# ---------------------------------------------------------------- Megatron

def cli_export(mix: Path, out: Path, fmt: str) -> Path:
    assert main(["export", "--mixture", str(mix), "--output", str(out), "--tokens", "60000",
                 "--seed", "5", "--format", fmt]) == 0
    return out


@pytest.fixture(scope="module")
def megatron_out(mix, tmp_path_factory):
    return cli_export(mix, tmp_path_factory.mktemp("megatron") / "out", "megatron")


def test_megatron_layout_and_tokens(mix, megatron_out):
    """Each domain's .bin/.idx hold, sequence by sequence, exactly the ids the mix run's
    tokenizer gives each exported document alone, then the EOD (its vocabulary size)."""
    out, m = megatron_out, json.loads((megatron_out / "manifest.json").read_text())
    tok, texts = stated(mix), texts_by_id(mix)
    eod = tok.get_vocab_size()
    assert (m["format"], m["eod_id"], m["vocab_size"], m["dtype"]) == ("megatron", eod, eod + 1, "uint16")
    for d, v in m["domains"].items():
        code, lengths, pointers, docs, flat = read_megatron(str(out / d / f"{d}_text_document"))
        rows = documents(out, d)
        want = [expected_ids(tok, texts[r["id"]], eod) for r in rows]
        assert code == 8 and len(rows) == v["documents"] == len(lengths)
        assert lengths.tolist() == [len(w) for w in want]
        assert pointers.tolist() == (np.concatenate(([0], np.cumsum(lengths)[:-1])) * 2).tolist()
        assert docs.tolist() == list(range(len(rows) + 1))
        assert flat.tolist() == [i for w in want for i in w]
        assert int(lengths.sum()) == v["tokens_achieved"]
    # the spelled-out EOD in a web page stayed text
    web = [r["id"] for r in documents(out, "web")]
    assert SPELLED_EOD["id"] in web


def test_megatron_core_reads_the_files(mix, megatron_out):
    """megatron-core's own IndexedDataset reads back each document's ids and the
    document boundaries; its blend parser reads the --data-path line, and its GPT
    dataset builder builds a blended training set from it."""
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset",
                                  reason="the megatron extra: pip install 'curation[megatron]'")
    from megatron.core.datasets.utils import get_blend_from_list
    out, m = megatron_out, json.loads((megatron_out / "manifest.json").read_text())
    tok, texts = stated(mix), texts_by_id(mix)
    line = (out / "megatron_data_path.txt").read_text()
    assert line.strip() == m["data_path"]
    prefixes, weights = get_blend_from_list(line.split())
    assert prefixes == [str((out / d / f"{d}_text_document").resolve()) for d in sorted(m["domains"])]
    total = m["tokens_achieved"]
    assert weights == pytest.approx([v["tokens_achieved"] / total for _, v in sorted(m["domains"].items())],
                                    rel=1e-9)
    for d, prefix in zip(sorted(m["domains"]), prefixes):
        ds = indexed.IndexedDataset(prefix)
        rows = documents(out, d)
        assert ds.index.dtype == np.uint16 and len(ds) == len(rows) == m["domains"][d]["documents"]
        assert ds.document_indices.tolist() == list(range(len(rows) + 1))
        for k, r in enumerate(rows):
            assert ds[k].tolist() == expected_ids(tok, texts[r["id"]], m["eod_id"]), (d, k)

    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizer
    # megatron-core 0.16's null tokenizer puts its EOD at vocab_size: ours
    null = MegatronTokenizer.from_pretrained(metadata_path={"library": "null"}, vocab_size=m["eod_id"])
    assert null.eod == m["eod_id"]
    cfg = GPTDatasetConfig(random_seed=1, sequence_length=64, blend=(prefixes, weights), split="1,0,0",
                           tokenizer=null, reset_position_ids=False, reset_attention_mask=False,
                           eod_mask_loss=False, path_to_cache=None, mmap_bin_files=True)
    n = total // 65
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, cfg).build()
    share = np.bincount(np.asarray(train.dataset_index), minlength=len(prefixes)) / len(train)
    assert share == pytest.approx(weights, abs=0.01)
    assert int(np.asarray(train[0]["tokens"]).max()) <= m["eod_id"]


# ---------------------------------------------------------------- OLMo

@pytest.fixture(scope="module")
def olmo_out(mix, tmp_path_factory):
    return cli_export(mix, tmp_path_factory.mktemp("olmo") / "out", "olmo")


def test_olmo_arrays_read_as_olmo_core_reads_them(mix, olmo_out):
    """np.memmap with the manifest's dtype (OLMo-core's read) gives each document's ids
    and an EOD after each; the .csv.gz gives the same boundaries; the source mixture
    names every file with its share."""
    out, m = olmo_out, json.loads((olmo_out / "manifest.json").read_text())
    tok, texts = stated(mix), texts_by_id(mix)
    eod = m["eod_id"]
    assert (m["dtype"], eod) == ("uint16", tok.get_vocab_size())
    mixture = yaml.safe_load((out / "olmo_source_mixture.yaml").read_text())
    sources = {s["source_name"]: s for s in mixture["sources"]}
    assert set(sources) == set(m["domains"])
    assert sum(s["target_ratio"] for s in sources.values()) == pytest.approx(1.0, abs=1e-12)
    for d, v in m["domains"].items():
        path = out / d / "part-00000.npy"
        assert sources[d]["paths"] == [str(path.resolve())]
        assert sources[d]["target_ratio"] == v["tokens_achieved"] / m["tokens_achieved"]
        arr = np.memmap(path, dtype=np.dtype(m["dtype"]), mode="r")
        ends = (np.flatnonzero(arr == eod) + 1).tolist()
        starts = [0] + ends[:-1]
        rows = documents(out, d)
        assert len(ends) == len(rows) == v["documents"] and ends[-1] == len(arr) == v["tokens_achieved"]
        for (a, b), r in zip(zip(starts, ends), rows):
            assert arr[a:b].tolist() == expected_ids(tok, texts[r["id"]], eod)
        with gzip.open(out / d / "part-00000.csv.gz", "rt") as f:
            assert [tuple(map(int, x.split(","))) for x in f] == list(zip(starts, ends))


def test_olmo_core_builds_the_mixture(olmo_out):
    """ai2-olmo-core loads the source mixture, counts each file's tokens by its dtype,
    finds documents by the metadata and by the EOS, and builds its mixture dataset."""
    pytest.importorskip("olmo_core.data.source_mixture", reason="the olmo extra: pip install 'curation[olmo]'")
    import tempfile

    from olmo_core.data import NumpyFSLDatasetConfig, TokenizerConfig
    from olmo_core.data.source_mixture import SourceMixtureDatasetConfig, SourceMixtureList
    from olmo_core.data.utils import iter_document_indices
    out, m = olmo_out, json.loads((olmo_out / "manifest.json").read_text())
    dtype = getattr(np, m["dtype"])
    sources = SourceMixtureList.from_yaml(str(out / "olmo_source_mixture.yaml"))
    sources.validate()
    src = SourceMixtureDatasetConfig(source_list=sources, requested_tokens=m["tokens_achieved"],
                                     global_batch_size=64 * 4, seed=3, render_tables=False, quiet=True)
    built = src.build(npdtype=dtype, sequence_length=64)
    for outcome in built.sources:
        v = m["domains"][outcome.name]
        [pt] = outcome.path_tokens
        assert pt.max_tokens == v["tokens_achieved"]          # the file, counted by OLMo-core
        assert v["tokens_achieved"] - 64 < pt.tokens <= v["tokens_achieved"]
        by_meta = list(iter_document_indices(pt.path))
        by_eos = [(int(a), int(b)) for a, b in
                  iter_document_indices(pt.path, eos_token_id=m["eod_id"], dtype=dtype)]
        assert by_meta == by_eos and len(by_meta) == v["documents"]
    tok = TokenizerConfig(vocab_size=m["vocab_size"], eos_token_id=m["eod_id"], pad_token_id=m["eod_id"])
    with tempfile.TemporaryDirectory() as work:
        ds = NumpyFSLDatasetConfig.from_src_mix(src, tokenizer=tok, sequence_length=64, work_dir=work).build()
        ds.prepare()
        assert len(ds) == sum(pt.tokens for o in built.sources for pt in o.path_tokens) // 64
        assert int(ds[0]["input_ids"].max()) <= m["eod_id"]


# ---------------------------------------------------------------- tokenizers

def hf_tokenizer(mix: Path, where: Path, *, fillers: int = 0) -> Path:
    """A Hugging Face tokenizer with an <|endoftext|> special token, trained on the
    corpus; `fillers` added tokens first push the vocabulary (and the EOD) past 65,535."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sorted(texts_by_id(mix).values()), trainer=trainer)
    if fillers:
        tok.add_tokens([f"<filler{i}>" for i in range(fillers)])
    tok.add_special_tokens(["<|endoftext|>"])
    where.mkdir(parents=True)
    tok.save(str(where / "tokenizer.json"))
    return where


def test_a_hugging_face_tokenizer_and_its_endoftext(mix, tmp_path):
    """--tokenizer DIR: its <|endoftext|> is the EOD, the budget counts its tokens (EOD
    included) and each document is its ids alone; with no EOD token, an error that says
    to give --eod-id, and an --eod-id that is an ordinary token is refused."""
    tdir = hf_tokenizer(mix, tmp_path / "tok")
    tok = tokenizers.Tokenizer.from_file(str(tdir / "tokenizer.json"))
    eod = tok.token_to_id("<|endoftext|>")
    out = tmp_path / "out"
    m = export_mixture(str(mix), str(out), 50_000, seed=2, fmt="megatron", tokenizer=str(tdir),
                       log=lambda s: None)
    assert m["eod_id"] == eod and m["vocab_size"] == tok.get_vocab_size() and m["dtype"] == "uint16"
    texts = texts_by_id(mix)
    for d, v in m["domains"].items():
        _, lengths, _, _, flat = read_megatron(str(out / d / f"{d}_text_document"))
        want = [expected_ids(tok, texts[r["id"]], eod) for r in documents(out, d)]
        assert flat.tolist() == [i for w in want for i in w] and int((flat == eod).sum()) == v["documents"]
    # tokenizer_config.json's eos_token names the EOD when there is one
    (tdir / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<pad>"}}))
    m2 = export_mixture(str(mix), str(tmp_path / "out2"), 50_000, seed=2, fmt="olmo", tokenizer=str(tdir),
                        log=lambda s: None)
    assert m2["eod_id"] == tok.token_to_id("<pad>")

    bare = tokenizers.Tokenizer.from_file(str(mix.parent / "tokenizer.json"))
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(ConfigError, match="no end-of-document token.*--eod-id"):
        export_mixture(str(mix), str(tmp_path / "x"), 50_000, fmt="olmo", tokenizer=str(tmp_path / "bare.json"),
                       log=lambda s: None)
    with pytest.raises(ConfigError, match="ordinary token"):
        export_mixture(str(mix), str(tmp_path / "x"), 50_000, fmt="olmo", tokenizer=str(tdir), eod_id=200,
                       log=lambda s: None)
    # past the vocabulary, as the mix run's tokenizer's default
    m3 = export_mixture(str(mix), str(tmp_path / "out3"), 50_000, fmt="olmo",
                        tokenizer=str(tmp_path / "bare.json"), eod_id=bare.get_vocab_size(), log=lambda s: None)
    assert m3["vocab_size"] == bare.get_vocab_size() + 1
    assert not (tmp_path / "x").exists()


def test_a_large_vocabulary_takes_the_wide_dtypes(mix, tmp_path):
    """At 65,500 entries or more Megatron's files are int32 (its rule), and past 65,536
    OLMo's are uint32: an EOD id above 65,535 survives in both."""
    tdir = hf_tokenizer(mix, tmp_path / "tok", fillers=66_000)
    tok = tokenizers.Tokenizer.from_file(str(tdir / "tokenizer.json"))
    eod = tok.token_to_id("<|endoftext|>")
    assert eod > 65_535
    mm = export_mixture(str(mix), str(tmp_path / "meg"), 30_000, fmt="megatron", tokenizer=str(tdir),
                        log=lambda s: None)
    mo = export_mixture(str(mix), str(tmp_path / "olmo"), 30_000, fmt="olmo", tokenizer=str(tdir),
                        log=lambda s: None)
    assert (mm["dtype"], mo["dtype"]) == ("int32", "uint32")
    for d in mm["domains"]:
        code, lengths, _, _, flat = read_megatron(str(tmp_path / "meg" / d / f"{d}_text_document"))
        arr = np.memmap(tmp_path / "olmo" / d / "part-00000.npy", dtype=np.uint32, mode="r")
        assert code == 4 and int((flat == eod).sum()) == len(lengths) == mm["domains"][d]["documents"]
        assert arr.tolist() == flat.tolist()          # same tokens, same order, either format
    try:
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError:
        return
    ds = IndexedDataset(str(tmp_path / "meg" / "web" / "web_text_document"))
    assert ds.index.dtype == np.int32 and int(ds[0][-1]) == eod


# ---------------------------------------------------------------- where export stops

@pytest.mark.parametrize("fmt", ["jsonl", "olmo"])
@pytest.mark.parametrize("tokens, seed", [(60_000, 0), (150_000, 7), (203_333, 11)])
def test_the_total_lands_within_one_document(mix, tmp_path, fmt, tokens, seed):
    """The tokens written reach N and pass it by less than one document (the crossing
    document of a domain); each domain is within one of its documents of its share, and
    the shares add up to N. Counted from what was written."""
    out = tmp_path / "out"
    m = export_mixture(str(mix), str(out), tokens, seed=seed, fmt=fmt, shard_docs=7, log=lambda s: None)
    weights = yaml.safe_load(mix.read_text())["weights"]
    asks = domain_asks(weights, tokens)
    assert sum(asks.values()) == tokens
    assert all(abs(asks[d] - w * tokens) <= 1 for d, w in weights.items())
    tok = stated(mix)
    eod = tok.get_vocab_size()
    got, last = {}, {}
    for d in weights:
        if fmt == "jsonl":
            rows = []
            for p in sorted((out / d).glob("part-*.jsonl.gz")):
                with gzip.open(p, "rt", encoding="utf-8") as f:
                    rows += [json.loads(x) for x in f]
            sizes = [len(tok.encode(r["text"]).ids) for r in rows]
        else:
            arr = np.memmap(out / d / "part-00000.npy", dtype=np.uint16, mode="r")
            sizes = np.diff(np.concatenate(([0], np.flatnonzero(arr == eod) + 1))).tolist()
        got[d], last[d] = sum(sizes), sizes[-1]
        assert got[d] == m["domains"][d]["tokens_achieved"] and asks[d] == m["domains"][d]["tokens_asked"]
    total = sum(got.values())
    assert total == m["tokens_achieved"]
    assert tokens <= total < tokens + max(last.values())
    # a domain stops past its share by less than its last document, or short of it by
    # less than the document it left out (no longer than its longest)
    for d in weights:
        longest = max(len(tok.encode(t).ids) for t in domain_texts(mix, d)) + (fmt != "jsonl")
        assert -longest < got[d] - asks[d] < last[d]


def domain_texts(mix: Path, domain: str) -> list[str]:
    pattern = yaml.safe_load(mix.read_text())["settings"]["data"]["sources"][domain]
    return [json.loads(x)["text"] for p in sorted(Path(pattern).parent.glob("*.jsonl"))
            for x in p.read_text(encoding="utf-8").splitlines()]


def test_token_exports_are_deterministic_and_clear_their_spill(mix, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b, a):
        export_mixture(str(mix), str(out), 80_000, seed=4, fmt="megatron", log=lambda s: None)
    ma, mb = (json.loads((o / "manifest.json").read_text()) for o in (a, b))
    # the same bytes but for the absolute paths in the blend line and the inventory of it
    assert {k: v for k, v in tree(a).items() if not k.endswith(".txt")} == \
        {k: v for k, v in tree(b).items() if not k.endswith(".txt")}
    assert ma["domains"] == mb["domains"] and ma["data_path"].replace(str(a), str(b)) == mb["data_path"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]          # no spill left


def test_format_settings_are_checked(mix, tmp_path, capsys):
    with pytest.raises(Exception, match="tokenizer and eod_id are for format megatron or olmo"):
        ExportConfig(tokens=10, tokenizer="x.json")
    assert ExportConfig(tokens=10, format="olmo", eod_id=3).eod_id == 3
    assert main(["export", "--mixture", str(mix), "--output", str(tmp_path / "o"), "--tokens", "1000",
                 "--eod-id", "5"]) == 2
    assert "eod_id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:                     # argparse: not a choice
        main(["export", "--mixture", str(mix), "--output", str(tmp_path / "o"), "--tokens", "1000",
              "--format", "parquet"])
    assert e.value.code == 2 and "invalid choice: 'parquet'" in capsys.readouterr().err
