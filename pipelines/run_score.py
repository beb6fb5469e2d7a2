"""Driver of `curate score`: the score stage's model check, plan, graph and manifest
(pipelines.runs.drive runs it)."""
from __future__ import annotations

import hashlib
import json
import os

from curation.config import ScoreRunConfig
from curation.documents import NO_DOMAIN
from curation.fs import is_remote, normpath
from curation.io import SCORE_FIELD
from curation.manifest import check_balance
from curation.verify import reconcile_output
from pipelines.fs import BeamFS
from pipelines.runner import UsageError
from pipelines.runs import Stage, checked, drive, field_map, input_files, locked, raise_for, read_counts
from curation.scores import BINS, KEY_SHIFT
from classifiers.scoring import ModelRef, load_quality_model
from pipelines.score import COUNTS_FILE, NS, SCORES_DIR, build_score

OUTPUT_DIRS = ("documents", "removed", "rejected", SCORES_DIR)


def check_model(path: str, fs: BeamFS) -> tuple[ModelRef, dict, str]:
    """The model directory, validated here before any worker starts: it holds one
    model file and metrics.json (written last by training: a complete directory), the
    model loads and is a quality model (labels __label__hq/__label__lq), and it
    scores. Returns its reference (with the model file's sha256), its metrics and
    the sha256 of metrics.json (max_chars there changes the scores too)."""
    from classifiers.fasttext_train import METRICS_JSON, MODEL_BIN, MODEL_FTZ
    where = normpath(path) if is_remote(path) else os.path.abspath(path.removeprefix("file://"))
    if not is_remote(where) and not os.path.isdir(where):
        raise UsageError(f"--model {path}: no such model directory")
    found = [n for n in (MODEL_BIN, MODEL_FTZ) if fs.exists(fs.join(where, n))]
    if not found:
        raise UsageError(f"--model {path}: no {MODEL_BIN} or {MODEL_FTZ} in it "
                         f"(a directory written by `curate train-classifier`)")
    if len(found) > 1:
        raise UsageError(f"--model {path}: both {MODEL_BIN} and {MODEL_FTZ} in it; keep one")
    metrics_path = fs.join(where, METRICS_JSON)
    if not fs.exists(metrics_path):
        raise UsageError(f"--model {path}: no {METRICS_JSON} (training writes it last: "
                         f"an unfinished model directory?)")
    with fs.open_read(metrics_path) as f:
        raw = f.read()
        try:
            metrics = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise UsageError(f"--model {path}: {METRICS_JSON} is not JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise UsageError(f"--model {path}: {METRICS_JSON} is not a JSON object")
    ref = ModelRef(path=where, file=found[0])
    try:
        model, sha = load_quality_model(ref, fs)
        probe = model.score(["a short probe document"])
    except Exception as e:  # noqa: BLE001 - fastText says "wrong file format" & co. as ValueError
        raise UsageError(f"--model {path}: cannot use it as a quality model: "
                         f"{type(e).__name__}: {e}") from None
    if len(probe) != 1 or not 0.0 <= float(probe[0]) <= 1.0:
        raise UsageError(f"--model {path}: the model's score is not a probability: {probe!r}")
    return ModelRef(path=where, file=found[0], sha256=sha), metrics, hashlib.sha256(raw).hexdigest()


def _model_section(ref: ModelRef, metrics: dict) -> dict:
    return {"path": ref.path, "file": ref.file, "sha256": ref.sha256,
            "label_threshold": metrics.get("threshold"),
            "held_out": metrics.get("held_out"),
            "hyperparameters": metrics.get("hyperparameters"),
            "label_counts": metrics.get("counts")}


def _parameters(cfg: ScoreRunConfig, ref: ModelRef, metrics_sha256: str, files) -> dict:
    group = "corpus" if cfg.keep_top_by == "corpus" else "domain"
    if cfg.min_score is None and cfg.keep_top is None:
        rule = "every document is kept"
    elif cfg.min_score is not None:
        rule = f"keep iff {SCORE_FIELD} >= threshold; threshold = {cfg.min_score}"
    else:
        rule = (f"keep iff bin(s) > b, or bin(s) == b and key_bin(id) >= t; s = {SCORE_FIELD}, "
                f"bin(s) = floor(s * {BINS}) (1.0 in the top bin), so bin(s) >= b iff s >= "
                f"threshold = b / {BINS}; target = ceil({cfg.keep_top} * N), N = scored documents "
                f"of the {group}; b = the highest bin at which the documents of the {group} in "
                f"it and above reach the target; need = target - documents above b; "
                f"key_bin(id) = the top {64 - KEY_SHIFT} bits of xxh3_64(UTF-8 bytes of the "
                f"document's id, seed 0); t = 0 (all of bin b) when bin b holds no more than "
                f"need documents, else the highest key bin at which the documents of bin b "
                f"with key_bin >= t reach need (kept = target plus the documents sharing key "
                f"bin t beyond the need)")
    return {
        "config": cfg.model_dump(mode="json"),
        # the bytes, not the path: a retrained model at the same path is another run
        "model": {"path": ref.path, "file": ref.file, "sha256": ref.sha256,
                  "metrics_sha256": metrics_sha256},
        "selection_rule": rule,
        "files": input_files(files),
    }


def _fraction(kept: int, scored: int) -> float | None:
    return kept / scored if scored else None


def _tie_break(cut: dict | None, kept: int) -> dict | None:
    """What the tie-break inside the cut's boundary bin did (None: no cut, or the bin
    was kept whole)."""
    if not cut or cut.get("tie_break") is None:
        return None
    tb = cut["tie_break"]
    return {"boundary_bin": cut["bin"], "threshold": cut["threshold"], "in_bin": cut["in_bin"],
            "above_bin": cut["above_bin"], "need": cut["need"], "key_bin_cut": tb["key_bin"],
            "kept_in_bin": tb["kept_in_bin"], "target": cut["target"], "kept": kept,
            "remnant": kept - cut["target"], "asked": cut["asked"],
            "achieved": kept / cut["scored"]}


def _selection(cfg: ScoreRunConfig, counts: dict, domains: dict, scores: dict) -> dict:
    """What was asked and what came out: thresholds, kept fractions of the scored
    documents, overall and per domain."""
    out: dict = {"mode": "keep_top" if cfg.keep_top is not None else
                 "min_score" if cfg.min_score is not None else "all",
                 "kept_fraction": _fraction(counts["kept"], counts["scored"])}
    per = {d: {"scored": v["scored"], "kept": v["kept"], "kept_fraction": _fraction(v["kept"], v["scored"])}
           for d, v in domains.items()}
    if cfg.min_score is not None:
        out["threshold"] = cfg.min_score
    if cfg.keep_top is not None:
        out["asked"] = cfg.keep_top
        out["by"] = cfg.keep_top_by
        out["achieved"] = out["kept_fraction"]
        if cfg.keep_top_by == "corpus":
            out["cut"] = scores["corpus"].get("cut")
            out["threshold"] = out["cut"]["threshold"] if out["cut"] else None
            out["tie_break"] = _tie_break(out["cut"], counts["kept"])
        else:
            for d, v in per.items():
                cut = scores["domains"].get(d, {}).get("cut")
                v.update({"asked": cfg.keep_top, "achieved": v["kept_fraction"], "cut": cut,
                          "threshold": cut["threshold"] if cut else None,
                          "tie_break": _tie_break(cut, v["kept"])})
    out["domains"] = per
    return out


def _parts(cfg: ScoreRunConfig, files, counts: dict, domains: dict, scores: dict) -> dict:
    """Counts that must agree with each other: every file once, domains to totals,
    every scored document kept or removed, the histograms to the scored count, and
    the kept counts to what the cut(s) predicted."""
    corpus, by_domain = scores["corpus"], scores["domains"]
    parts = {
        "files_expected": len(files), "files_seen": counts["files"],
        "input_sum_of_domains": sum(d["input"] for d in domains.values()),
        "kept_plus_removed": counts["kept"] + counts["removed"], "scored": counts["scored"],
        "histogram_count": corpus["count"],
        "histogram_sum_of_domains": sum(s["count"] for s in by_domain.values()),
        "domains_balance": all(d["input"] == d["kept"] + d["removed"] + d["rejected"]
                               for d in domains.values()),
    }
    ok = (parts["files_seen"] == len(files)
          and parts["input_sum_of_domains"] == counts["input"]
          and parts["kept_plus_removed"] == counts["scored"]
          and parts["histogram_count"] == parts["histogram_sum_of_domains"] == counts["scored"]
          and parts["domains_balance"])
    if cfg.keep_top is not None:
        parts["files_scanned"] = counts["files_scanned"]
        ok = ok and counts["files_scanned"] == len(files)
        cuts = ({"corpus": corpus.get("cut")} if cfg.keep_top_by == "corpus" else
                {d: s.get("cut") for d, s in sorted(by_domain.items())})
        # the tie scan found every document of the boundary bin the histograms counted
        unscanned = {g: (c["tie_break"]["scanned"], c["in_bin"]) for g, c in cuts.items()
                     if c and c.get("tie_break") and c["tie_break"]["scanned"] != c["in_bin"]}
        parts["tie_scan_unlike_histogram"] = unscanned
        ok = ok and not unscanned
        if cfg.keep_top_by == "corpus":
            # the cut's prediction: documents above the boundary bin plus those of it the
            # tie-break keeps (all of it without one)
            predicted = corpus["cut"]["kept"] if corpus.get("cut") else 0
            parts["kept_predicted_by_cut"] = predicted
            ok = ok and predicted == counts["kept"]
        else:
            wrong = {d: (v["kept"], (by_domain.get(d, {}).get("cut") or {}).get("kept", 0))
                     for d, v in domains.items()
                     if v["kept"] != (by_domain.get(d, {}).get("cut") or {}).get("kept", 0)}
            parts["domains_kept_unlike_cut"] = wrong
            ok = ok and not wrong
    parts["ok"] = ok
    return parts


def _clear_scores(fs: BeamFS, output: str) -> None:
    for path in fs.match(fs.join(output, SCORES_DIR, "*")):
        fs.delete(path)
    if not is_remote(output):   # object stores have no directories to remove
        try:
            os.rmdir(os.path.join(output.removeprefix("file://"), SCORES_DIR))
        except OSError:
            pass


class ScoreStage(Stage):
    name, namespace = "score", NS
    dirs, files = OUTPUT_DIRS, (COUNTS_FILE,)

    def plan(self, cfg: ScoreRunConfig, files, fs) -> dict:
        self.ref, self.metrics, metrics_sha256 = check_model(cfg.model, fs)
        self.model = cfg.model
        return _parameters(cfg, self.ref, metrics_sha256, files)

    def check_runner(self, runner: str) -> None:
        if "Dataflow" in runner and not is_remote(self.ref.path):
            raise UsageError(f"--model {self.model}: Dataflow workers cannot read a local directory; "
                             f"copy the model directory to gs:// and pass that path")

    def build(self, p, cfg: ScoreRunConfig, files) -> None:
        build_score(p, files, output=cfg.output, fmt=cfg.output_format, fields=field_map(cfg),
                    model=self.ref, max_doc_bytes=cfg.max_doc_bytes, strict=cfg.strict,
                    batch_size=cfg.batch_size, min_score=cfg.min_score, keep_top=cfg.keep_top,
                    keep_top_by=cfg.keep_top_by, split_bytes=cfg.split_bytes)

    def collect(self, cfg: ScoreRunConfig, files, fs, ran):
        data = read_counts(fs, cfg.output, COUNTS_FILE)
        raw, scores = data["counts"], data["scores"]
        counts = {k: int(raw[k]) for k in ("input", "scored", "kept", "removed", "rejected")}
        counts["blank_lines_skipped"] = int(raw["blank_lines"])   # not records: not in the balance
        if raw.get("other_records"):                              # WARC inputs only
            counts["warc_records_skipped"] = int(raw["other_records"])
        counts["rejected_by_cause"] = dict(sorted(raw["rejected_by_cause"].items()))
        domains = {d: {k: int(v.get(k, 0)) for k in ("input", "scored", "kept", "removed", "rejected")}
                   for d, v in sorted(raw["domains"].items())}
        balance = check_balance(counts, removed_keys=("removed",))
        parts = _parts(cfg, files, {**counts, "files": raw["files"], "files_scanned": raw["files_scanned"]},
                       domains, scores)
        reconciled = reconcile_output("score", cfg.output, files, counts, max_doc_bytes=cfg.max_doc_bytes, fs=fs)
        ok = balance["ok"] and parts["ok"] and reconciled.ok
        body = {
            "model": _model_section(self.ref, self.metrics),
            "score_field": SCORE_FIELD,
            "selection": _selection(cfg, counts, domains, scores),
            "counts": counts,
            "domains": domains,
            "domain_of_unlabelled": NO_DOMAIN,
            "scores": {"bins": BINS, "corpus": scores["corpus"],
                       "domains": dict(sorted(scores["domains"].items()))},
            **checked(balance, parts, reconciled, ran, NS),
        }
        return body, ok, raise_for(balance, reconciled, ok, parts)

    def finish(self, fs, cfg, manifest, ok) -> None:
        _clear_scores(fs, cfg.output)                  # a complete run holds no temporaries
        fs.delete(fs.join(cfg.output, COUNTS_FILE))    # folded into the manifest


@locked("score")
def run_score(cfg: ScoreRunConfig, beam_args: list[str], *, overwrite: bool = False) -> dict:
    return drive(ScoreStage(), cfg, beam_args, overwrite=overwrite)
