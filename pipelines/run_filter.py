"""Driver of `curate filter`: the filter stage's plan, graph and manifest
(pipelines.runs.drive runs it)."""
from __future__ import annotations

import yaml

from curation.config import ConfigError, FilterRunConfig
from curation.documents import NO_DOMAIN
from curation.manifest import check_balance
from curation.verify import reconcile_output
from pipelines.filter import COUNTS_FILE, NS, build_filter, sample_name
from pipelines.fs import BeamFS
from pipelines.runner import UsageError
from pipelines.runs import Stage, checked, drive, field_map, input_files, locked, raise_for, read_counts

OUTPUT_DIRS = ("documents", "removed", "rejected")


def load_run_chain(cfg: FilterRunConfig, fs: BeamFS):
    """The chain, built here once to validate it (errors name the file and field),
    and the spec workers rebuild it from: a preset name, or the filter YAML's
    content (workers cannot read a path on this machine)."""
    from curation.filters import load_chain
    if cfg.filters_config is None:
        spec = {"preset": cfg.preset} if cfg.preset is not None else {}
        return load_chain(**spec), spec
    path = cfg.filters_config
    chain = load_chain(config=path, fs=fs)
    with fs.open_read(path) as f:
        data = yaml.safe_load(f.read().decode("utf-8"))
    spec = {"config": data}
    if load_chain(**spec, fs=fs).config() != chain.config():
        raise ConfigError(f"{path}: the filter config does not load the same from its content "
                          f"as from its path (relative paths in it?)")
    return chain, spec


def _parameters(cfg: FilterRunConfig, chain, files) -> dict:
    return {
        "config": cfg.model_dump(mode="json"),
        "chain": chain.config(),
        "reasons": list(chain.reasons),
        "removed_sample_rule": None if cfg.removed_sample is None else
        f"the first {cfg.removed_sample} removed documents per rule in input order "
        f"(files sorted by path, then line/row)",
        "files": input_files(files),
    }


def _summarise(data: dict, reasons: list[str], tallies: tuple[str, ...] = ()) -> dict:
    """The counts file -> the manifest's counts, with every rule present (zeros too),
    and the chain's tallies when it has any."""
    seen = sorted(set(data["removed_by_reason"]) - set(reasons))   # never drop a reason
    reasons = list(reasons) + seen
    counts = {k: int(data[k]) for k in ("input", "kept", "removed", "rejected", "edited",
                                        "removed_written")}
    counts["blank_lines_skipped"] = int(data["blank_lines"])   # not records: not in the balance
    if data.get("other_records"):                             # WARC inputs only
        counts["warc_records_skipped"] = int(data["other_records"])
    counts["rejected_by_cause"] = dict(sorted(data["rejected_by_cause"].items()))
    domains = {}
    for d, v in sorted(data["domains"].items()):
        domains[d] = {"input": v["input"], "kept": v["kept"], "edited": v["edited"],
                      "rejected": v["rejected"],
                      "removed": {r: v["removed"].get(r, 0) for r in reasons}}
    out = {
        "counts": counts,
        "removed_by_reason": {r: data["removed_by_reason"].get(r, 0) for r in reasons},
        "removed_written_by_reason": {r: data["removed_written_by_reason"].get(r, 0) for r in reasons},
        "domains": domains,
    }
    if tallies:
        got = data.get("tallies", {})
        out["tallies"] = {t: int(got.get(t, 0)) for t in tallies}
    return out


class FilterStage(Stage):
    name, namespace = "filter", NS
    dirs, files = OUTPUT_DIRS, (COUNTS_FILE,)

    def plan(self, cfg: FilterRunConfig, files, fs) -> dict:
        self.chain, self.chain_spec = load_run_chain(cfg, fs)
        names = [sample_name(r, cfg.output_format) for r in self.chain.reasons]
        if len(set(names)) != len(names):
            raise UsageError(f"two rules share a sample file name: {sorted(self.chain.reasons)}")
        return _parameters(cfg, self.chain, files)

    def build(self, p, cfg: FilterRunConfig, files) -> None:
        build_filter(p, files, output=cfg.output, fmt=cfg.output_format, fields=field_map(cfg),
                     chain_spec=self.chain_spec, removed_sample=cfg.removed_sample,
                     max_doc_bytes=cfg.max_doc_bytes, strict=cfg.strict, split_bytes=cfg.split_bytes)

    def collect(self, cfg: FilterRunConfig, files, fs, ran):
        data = read_counts(fs, cfg.output, COUNTS_FILE)
        summary = _summarise(data, list(self.chain.reasons), self.chain.tallies)
        counts = summary["counts"]
        balance = check_balance(counts, removed_keys=("removed",))
        # the parts must add up too: every file once, reasons and domains to the totals
        parts = {
            "files_expected": len(files), "files_seen": int(data["files"]),
            "removed_sum_of_reasons": sum(summary["removed_by_reason"].values()),
            "input_sum_of_domains": sum(d["input"] for d in summary["domains"].values()),
        }
        parts["ok"] = (parts["files_seen"] == parts["files_expected"]
                       and parts["removed_sum_of_reasons"] == counts["removed"]
                       and parts["input_sum_of_domains"] == counts["input"])
        sample_ok = (counts["removed_written"] == counts["removed"] if cfg.removed_sample is None else
                     all(summary["removed_written_by_reason"][r] == min(n, cfg.removed_sample)
                         for r, n in summary["removed_by_reason"].items()))
        parts["removed_written_ok"] = sample_ok
        reconciled = reconcile_output("filter", cfg.output, files, counts, max_doc_bytes=cfg.max_doc_bytes,
                                      removed_sample=cfg.removed_sample, fs=fs)
        ok = balance["ok"] and parts["ok"] and sample_ok and reconciled.ok
        body = {
            "chain": self.chain.config(),
            "counts": counts,
            "removed_by_reason": summary["removed_by_reason"],
            "removed_sample": {"per_rule": cfg.removed_sample,
                               "written_by_reason": summary["removed_written_by_reason"]},
            "domains": summary["domains"],
            "domain_of_unlabelled": NO_DOMAIN,
            **checked(balance, parts, reconciled, ran, NS),
        }
        if "tallies" in summary:   # e.g. {"pii.email": n}: signals summed over kept documents
            body["tallies"] = summary["tallies"]
        return body, ok, raise_for(balance, reconciled, ok, parts)

    def finish(self, fs, cfg, manifest, ok) -> None:
        fs.delete(fs.join(cfg.output, COUNTS_FILE))   # folded into the manifest


@locked("filter")
def run_filter(cfg: FilterRunConfig, beam_args: list[str], *, overwrite: bool = False) -> dict:
    return drive(FilterStage(), cfg, beam_args, overwrite=overwrite)
