"""Damaged inputs: a reader keeps every record that can still be read (up to the damage
in a .gz/.zst stream, resuming at the next gzip member or zstd frame that decodes; row
group by row group in Parquet), counts what was lost, and says so with a damage cause."""
import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curation.documents import REJECT_CAUSES, Document, InputError, Rejected
from curation.io import DAMAGE_CAUSES, read_documents, read_rows
from pipelines.cli import main

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
WORDS = ["harbour", "library", "market", "bridge", "garden", "station", "river", "school", "museum"]


def text(i: int) -> str:
    # distinct, sentence-like texts (no two near-duplicates, nothing a filter preset drops)
    return " ".join(f"The {WORDS[(i + j) % 9]} number {i * 31 + j} opened in week {j}." for j in range(8))


def lines(n: int) -> list[bytes]:
    return [json.dumps({"id": f"d{i}", "text": text(i)}).encode() + b"\n" for i in range(n)]


def split(reader):
    recs = list(reader)
    return [r for r in recs if isinstance(r, Document)], [r for r in recs if isinstance(r, Rejected)]


def whole_lines(decoded: bytes) -> int:
    return decoded.count(b"\n")


def test_damage_causes_are_reject_causes():
    assert DAMAGE_CAUSES <= set(REJECT_CAUSES)
    assert DAMAGE_CAUSES == {"unreadable_file", "truncated_file", "corrupt_data", "unreadable_row_group"}


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_stream_keeps_every_whole_line_that_was_stored(tmp_path, suffix):
    data = b"".join(lines(3000))
    packed = gzip.compress(data) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(data)
    cut = packed[: len(packed) // 2]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(cut)
    # what the stored half holds, decoded by the compression library itself
    if suffix.endswith("gz"):
        stored = zlib.decompressobj(31).decompress(cut)
    else:
        stored = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    readable = whole_lines(stored)
    assert 0 < readable < 3000

    reader = read_documents(str(path))
    docs, rej = split(reader)
    assert [d.id for d in docs] == [f"d{i}" for i in range(readable)]     # every stored whole line
    assert [(r.line, r.cause) for r in rej] == [(readable + 1, "truncated_file")]
    partial = len(stored) - stored.rfind(b"\n") - 1
    assert rej[0].raw_bytes == partial and f"partial line of {partial} bytes" in rej[0].detail
    assert f"after {len(cut)} compressed bytes" in rej[0].detail and f"{readable} lines read" in rej[0].detail
    if suffix.endswith("zst"):   # the frame header records its size: the loss is known in bytes
        due = len(data) - len(stored)
        assert f"its header says {due} more decompressed bytes were due" in rej[0].detail
        estimate = int(rej[0].detail.split("about ")[1].split(" lines lost")[0])
        assert abs(estimate - (3000 - readable)) < 0.1 * 3000
    else:
        assert "the number of lines lost is unknown" in rej[0].detail
    assert reader.stats.records == len(docs) + len(rej) and reader.stats.rejected_by_cause == {"truncated_file": 1}
    # deterministic: dedup reads each file twice and both passes must agree
    assert [(type(r).__name__, r.line) for r in read_documents(str(path))] == \
           [(type(r).__name__, r.line) for r in docs + rej]
    with pytest.raises(InputError, match="truncated_file"):
        list(read_documents(str(path), strict=True))


def _corrupt(frame: bytes) -> bytes:
    b = bytearray(frame)
    for i in range(len(b) // 3, len(b) // 3 + 24):
        b[i] ^= 0x5A
    return bytes(b)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_corrupt_frame_in_the_middle_resumes_at_the_next_frame(tmp_path, suffix):
    """zstd frames and gzip members each start with a magic number, so reading resumes
    at the next one; inside one frame/member, nothing after the damage is recoverable."""
    src = lines(3000)
    comp = gzip.compress if suffix.endswith("gz") else zstandard.ZstdCompressor(write_checksum=True).compress
    frames = [comp(b"".join(src[i:i + 500])) for i in range(0, 3000, 500)]
    frames[2] = _corrupt(frames[2])
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"".join(frames))

    reader = read_documents(str(path))
    docs, rej = split(reader)
    ids = [int(d.id[1:]) for d in docs]
    # frames 1-2 and 4-6 whole; of frame 3 at most what decoded before the damage
    assert ids[:1000] == list(range(1000)) and ids[-1500:] == list(range(1500, 3000))
    head = len(ids) - 2500
    assert ids[1000:1000 + head] == list(range(1000, 1000 + head)) and head < 500
    assert [r.cause for r in rej] == ["corrupt_data"]
    start = sum(map(len, frames[:3]))
    assert f"skipped to the next readable frame at byte {start}" in rej[0].detail
    assert "lines lost" in rej[0].detail and f"{1000 + head} lines read before it" in rej[0].detail
    # line numbers after the gap count lines read (the damage takes one): unique ordinals
    assert rej[0].line == 1001 + head and docs[1000 + head].line == 1002 + head
    assert len({d.ordinal for d in docs}) == len(docs)
    assert reader.stats.records == len(docs) + 1


def test_zstd_frames_cut_mid_line_reject_the_tail_after_the_gap(tmp_path):
    """Frames split at arbitrary bytes (zstd -T, pzstd): the first line after a lost frame is
    the tail of a line the damage cut, rejected as damage, not as malformed JSON."""
    data = b"".join(lines(1200))
    c = zstandard.ZstdCompressor()
    cuts = [0, 100_003, 200_011, len(data)]
    frames = [c.compress(data[a:b]) for a, b in zip(cuts, cuts[1:])]
    frames[1] = _corrupt(frames[1])
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(b"".join(frames))
    docs, rej = split(read_documents(str(path)))
    assert [r.cause for r in rej] == ["corrupt_data", "corrupt_data"]   # the gap, the cut tail
    assert "the tail of a line" in rej[1].detail and rej[1].line == rej[0].line + 1
    before = whole_lines(data[:cuts[1]])
    after = whole_lines(data[cuts[2]:]) - 1      # whole lines after the cut tail
    ids = [int(d.id[1:]) for d in docs]
    assert ids[:before] == list(range(before))
    assert ids[-after:] == list(range(1200 - after, 1200)) and len(ids) <= before + after + (
        whole_lines(data[cuts[1]:cuts[2]]))


def test_not_compressed_at_all_is_unreadable_file(tmp_path):
    path = tmp_path / "plain.jsonl.zst"
    path.write_bytes(b"".join(lines(20)))
    docs, rej = split(read_documents(str(path)))
    assert docs == [] and [(r.line, r.cause) for r in rej] == [(1, "unreadable_file")]
    assert f"compressed bytes of {path.stat().st_size} unread" in rej[0].detail


def corrupt_parquet(path: Path, n_groups: int = 10, rows: int = 100, bad: int = 3) -> None:
    """A Parquet file of `n_groups` row groups with bytes overwritten inside the page
    data of row group `bad`'s text column chunk; the footer stays intact."""
    table = pa.table({"id": [f"d{i}" for i in range(n_groups * rows)],
                      "text": [text(i) for i in range(n_groups * rows)]})
    pq.write_table(table, path, row_group_size=rows, compression="zstd")
    col = pq.ParquetFile(path).metadata.row_group(bad).column(1)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 4, start + col.total_compressed_size - 4):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    md = pq.ParquetFile(path).metadata     # the footer still reads, with every count
    assert (md.num_rows, md.num_row_groups, md.row_group(bad).num_rows) == (n_groups * rows, n_groups, rows)


def test_parquet_corrupt_row_group_loses_only_its_rows(tmp_path):
    path = tmp_path / "p.parquet"
    corrupt_parquet(path)
    reader = read_documents(str(path))
    docs, rej = split(reader)
    assert [d.id for d in docs] == [f"d{i}" for i in range(1000) if not 300 <= i < 400]
    assert [d.line for d in docs] == [i for i in range(1000) if not 300 <= i < 400]
    # one rejection per lost row, so conservation holds by record against the footer's count
    assert [(r.line, r.cause) for r in rej] == [(i, "unreadable_row_group") for i in range(300, 400)]
    assert "row group 4 of 10 (rows 300-399)" in rej[0].detail and "100 of its 100 rows lost" in rej[0].detail
    assert len(docs) + len(rej) == reader.stats.records == pq.ParquetFile(path).metadata.num_rows
    assert [(type(r).__name__, r.line) for r in read_documents(str(path))] == \
           [(type(r).__name__, r.line) for r in sorted(docs + rej, key=lambda r: r.line)]
    with pytest.raises(InputError, match=r"p\.parquet:300: unreadable_row_group"):
        list(read_documents(str(path), strict=True))


def test_parquet_without_a_footer_is_one_unreadable_file(tmp_path):
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"text": [text(i) for i in range(50)]}), path)
    path.write_bytes(path.read_bytes()[:-30])
    docs, rej = split(read_documents(str(path)))
    assert docs == [] and [(r.line, r.cause) for r in rej] == [(0, "unreadable_file")]
    assert "footer cannot be read" in rej[0].detail and f"is {path.stat().st_size} bytes" in rej[0].detail


# ---------------------------------------------------------------- end to end on the local runner

@pytest.fixture
def damaged(tmp_path):
    """Three inputs: a good .jsonl, a truncated .jsonl.zst, a Parquet file with a bad row group."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_bytes(b"".join(
        json.dumps({"id": f"a{i}", "text": text(5000 + i)}).encode() + b"\n" for i in range(50)))
    zst = zstandard.ZstdCompressor().compress(b"".join(
        json.dumps({"id": f"z{i}", "text": text(1000 + i)}).encode() + b"\n" for i in range(600)))
    (d / "b.jsonl.zst").write_bytes(zst[: len(zst) * 2 // 3])
    corrupt_parquet(d / "c.parquet", n_groups=4, rows=50, bad=1)
    readable = set()
    for f in ("a.jsonl", "b.jsonl.zst", "c.parquet"):
        readable |= {r.id for r in read_documents(str(d / f)) if isinstance(r, Document)}
    assert len(readable) == 50 + 150 + len([1 for i in readable if i.startswith("z")])
    return d, readable


def rows(out: Path, sub: str) -> list[dict]:
    return [r for p in sorted((out / sub).glob("*")) for r in read_rows(str(p))]


def check_damage_rows(out: Path, d: Path):
    rej = rows(out, "rejected")
    by_file = {}
    for r in rej:
        by_file.setdefault(Path(r["file"]).name, []).append(r)
    assert set(by_file) == {"b.jsonl.zst", "c.parquet"}
    assert [r["cause"] for r in by_file["b.jsonl.zst"]] == ["truncated_file"]
    assert [(r["line"], r["cause"]) for r in by_file["c.parquet"]] == \
           [(i, "unreadable_row_group") for i in range(50, 100)]
    assert "50 of its 50 rows lost" in by_file["c.parquet"][0]["detail"]
    return rej


@pytest.mark.parametrize("stage", ["dedup", "filter"])
def test_pipeline_keeps_the_readable_rows_and_writes_the_damage(damaged, tmp_path, stage, capsys):
    d, readable = damaged
    out = tmp_path / stage
    extra = ["--preset", "minimal"] if stage == "filter" else []
    # damage is a failure unless accepted; the readable rows are written either way
    assert main([stage, "--input", str(d), "--output", str(out), *extra, *FAST]) == 1
    err = capsys.readouterr().err
    assert "damaged input lost data" in err and "b.jsonl.zst: truncated_file" in err
    assert "c.parquet: unreadable_row_group" in err and "--allow-damaged" in err
    m = json.loads((out / "manifest.json").read_text())
    kept = {r["id"] for r in rows(out, "documents")}
    assert kept == readable                       # every readable row arrives, distinct texts
    rej = check_damage_rows(out, d)
    c = m["counts"]
    assert c["rejected"] == len(rej) == 51
    assert c["rejected_by_cause"] == {"truncated_file": 1, "unreadable_row_group": 50}
    # accepted: the same outputs, exit 0, the loss still said
    assert main([stage, "--input", str(d), "--output", str(out), *extra, *FAST,
                 "--allow-damaged"]) == 0
    assert "accepted by --allow-damaged" in capsys.readouterr().err
