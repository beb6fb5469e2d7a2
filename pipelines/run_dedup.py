"""Driver of `curate dedup`: the dedup stage's plan, graph and manifest
(pipelines.runs.drive runs it)."""
from __future__ import annotations

from curation.config import DedupConfig
from curation.dedup_index import IndexError_
from curation.lsh import LSHParams
from curation.manifest import BalanceError, check_balance
from curation.minhash import MinHasher
from curation.verify import reconcile_output
from pipelines.dedup import NS, WORK_DIR, build_dedup
from pipelines.dedup_index import plan_indexes
from pipelines.fs import remove_tree
from pipelines.runner import UsageError, counters, distribution_max
from pipelines.runs import Stage, drive, field_map, input_files, locked

OUTPUT_DIRS = ("documents", "clusters", "rejected")
KEEP_RULES = {"first": "first occurrence in input order (files sorted by path, then line/row)",
              "longest": "the longest text (in characters), ties to the first in input order",
              "none": "none: every member of a cluster is removed"}
REMOVED_KEYS = ("removed_exact", "removed_near", "removed_exact_index", "removed_near_index")
# ours too: the signing pass's work files, left behind only by a run that failed
OURS = OUTPUT_DIRS + (WORK_DIR,)


def _parameters(cfg: DedupConfig, lsh: LSHParams, minhash_params: dict, files, indexes) -> dict:
    return {
        # a rerun against an index that has grown since is a different run
        **({"against": [{"path": ix.path, "generations": len(ix.generations)} for ix in indexes]}
           if indexes else {}),
        "config": cfg.model_dump(mode="json"),
        "lsh": {"threshold": lsh.threshold, "num_perm": lsh.num_perm,
                "bands": lsh.bands, "rows": lsh.rows,
                "verify": cfg.verify, "verify_threshold": lsh.verify_threshold},
        "minhash": minhash_params,
        "keep_rule": KEEP_RULES.get(cfg.keep) or (
            f"the highest {cfg.keep.split(':', 1)[1]} (missing or not a number: lowest), ties to "
            f"the first in input order"),
        "files": input_files(files),
    }


class DedupStage(Stage):
    name, namespace = "dedup", NS
    dirs = OURS

    def plan(self, cfg: DedupConfig, files, fs) -> dict:
        try:
            self.lsh = LSHParams.for_threshold(cfg.threshold, cfg.num_perm, cfg.bands, cfg.rows,
                                               tolerance=cfg.verify_tolerance if cfg.verify == "estimate" else 0.0)
            self.minhash = dict(num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram,
                                char_ngrams=cfg.char_ngrams, backend=cfg.backend, family=cfg.family)
            minhash_params = MinHasher(**self.minhash).params()
        except (ValueError, RuntimeError) as e:   # no GPU for backend=cupy, ...
            raise UsageError(str(e)) from None
        try:
            self.index = plan_indexes(fs, cfg, minhash_params, self.lsh, input_files(files))
        except IndexError_ as e:
            raise UsageError(str(e)) from None
        return _parameters(cfg, self.lsh, minhash_params, files, self.index.against)

    def build(self, p, cfg: DedupConfig, files) -> None:
        lsh = self.lsh
        build_dedup(p, files, output=cfg.output, fmt=cfg.output_format, fields=field_map(cfg),
                    minhash=self.minhash, bands=lsh.bands, rows=lsh.rows,
                    threshold=lsh.verify_threshold if cfg.verify == "estimate" else cfg.threshold,
                    verify=cfg.verify, kept_threshold=cfg.threshold - cfg.kept_tolerance,
                    max_cluster_size=cfg.max_cluster_size, on_large_cluster=cfg.on_large_cluster,
                    keep=cfg.keep,
                    cc_max_rounds=cfg.cc_max_rounds,
                    max_doc_bytes=cfg.max_doc_bytes, strict=cfg.strict, batch_size=cfg.batch_size,
                    lsh_partitions=cfg.lsh_partitions, split_bytes=cfg.split_bytes,
                    against=self.index.sources, index_dir=self.index.generation_dir,
                    index_threshold=self.index.threshold)

    def before_run(self, fs) -> None:
        if self.index.generation_dir is not None:
            self.index.clear(fs)

    def collect(self, cfg: DedupConfig, files, fs, ran):
        remove_tree(fs, fs.join(cfg.output, WORK_DIR))
        raw = counters(ran.result, NS)
        counts = {k: raw.get(k, 0) for k in ("input", "input_documents", "kept", "removed_exact",
                                              "removed_near", "rejected")}
        if self.index.sources is not None:
            counts.update(removed_exact_index=raw.get("removed_exact_index", 0),
                          removed_near_index=raw.get("removed_near_index", 0))
        counts["blank_lines_skipped"] = raw.get("blank_lines", 0)   # not records: not in the balance
        if raw.get("other_records"):                                # WARC inputs only
            counts["warc_records_skipped"] = raw["other_records"]
        counts["rejected_by_cause"] = {k[len("rejected_"):]: v for k, v in sorted(raw.items())
                                       if k.startswith("rejected_") and k != "rejected"}
        balance = check_balance(counts, REMOVED_KEYS)
        # The first pass signs every valid document; the second must have seen the same ones.
        passes_agree = raw.get("signed_documents", 0) == counts["input_documents"]
        changes = []
        for i in range(cfg.cc_max_rounds):
            changes.append(raw.get(f"cc_round_{i:02d}_large_changed", 0)
                           + raw.get(f"cc_round_{i:02d}_small_changed", 0))
        reconciled = reconcile_output("dedup", cfg.output, files, counts, max_doc_bytes=cfg.max_doc_bytes, fs=fs)
        converged_at = next((i + 1 for i, c in enumerate(changes) if c == 0), None)
        body = {
            "counts": counts,
            "removed_by_reason": {"exact_duplicate": counts["removed_exact"],
                                  "near_duplicate": counts["removed_near"],
                                  **({"exact_duplicate_of_index": counts["removed_exact_index"],
                                      "near_duplicate_of_index": counts["removed_near_index"]}
                                     if self.index.sources is not None else {})},
            **self.index.manifest(raw),
            "balance": balance,
            "reconciled": reconciled.as_manifest(),
            "passes_agree": {"signed_in_first_pass": raw.get("signed_documents", 0),
                             "documents_in_second_pass": counts["input_documents"],
                             "ok": passes_agree},
            "connected_components": {"rounds_unrolled": cfg.cc_max_rounds,
                                     "rounds_until_no_change": converged_at,
                                     "changed_nodes_per_round": changes[: (converged_at or len(changes))]},
            "near_duplicate_edges": {k: raw.get(k, 0) for k in (
                "near_candidate_edges", "near_edges_verified", "near_edges_below_threshold")},
            # every removal checked against the document its cluster keeps; members that only
            # chained to it were split off into clusters of their own
            "kept_check": ({"threshold": cfg.threshold - cfg.kept_tolerance,
                            "measure": "exact Jaccard" if cfg.verify == "exact" else "estimated Jaccard",
                            **{k: raw.get(f"kept_check_{k}", 0) for k in (
                                "members_checked", "members_split", "clusters_split", "new_clusters",
                                "documents_left_alone")}}
                           if cfg.verify != "none" else {"skipped": "--verify none"}),
            "cluster_size": {"largest": distribution_max(ran.result, NS, "cluster_size") or 0,
                             "max_cluster_size": cfg.max_cluster_size,
                             "on_large_cluster": cfg.on_large_cluster if cfg.max_cluster_size else None,
                             "large_clusters": raw.get("large_clusters_clusters", 0),
                             "documents_in_large_clusters": raw.get("large_clusters_documents", 0)},
            "counters": dict(sorted(raw.items())),
            **({"keep_field_missing": raw.get("keep_field_missing", 0)} if cfg.keep.startswith("highest:") else {}),
        }
        self.raw = raw
        ok = balance["ok"] and passes_agree and reconciled.ok

        def raise_failed(path):
            if not balance["ok"]:
                raise BalanceError(f"counts do not balance: {balance} (see {path})")
            if not passes_agree:
                raise BalanceError(f"the two reads of the input disagree: {body['passes_agree']}")
            reconciled.raise_if_failed(path)
        return body, ok, raise_failed

    def finish(self, fs, cfg, manifest, ok) -> None:
        if self.index.generation_dir is not None and ok:
            # before the run's manifest: a run whose manifest exists has its generation listed
            manifest["index_written"] = self.index.commit(fs, self.raw.get("index_documents_written", 0))


@locked("dedup")
def run_dedup(cfg: DedupConfig, beam_args: list[str], *, overwrite: bool = False) -> dict:
    return drive(DedupStage(), cfg, beam_args, overwrite=overwrite)
