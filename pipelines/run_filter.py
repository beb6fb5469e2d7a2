"""Driver of `curate filter`: plan, run the Beam pipeline, write the manifest."""
from __future__ import annotations

import time

import yaml

from curation.config import ConfigError, FilterRunConfig
from curation.documents import NO_DOMAIN
from curation.io import expand_sources
from curation.manifest import BalanceError, check_balance
from curation.verify import reconcile_output
from pipelines.filter import COUNTS_FILE, NS, build_filter, sample_name
from pipelines.fs import BeamFS
from pipelines.runner import UsageError, check_beam_args, counters, make_pipeline
from pipelines.runs import (check_output_outside_inputs, field_map, input_files, is_dry_run, locked,
                           manifest_head, Ran, read_counts, reuse_or_clear, run_pipeline,
                           write_manifest)

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
    chain = load_chain(config=path)
    with fs.open_read(path) as f:
        data = yaml.safe_load(f.read().decode("utf-8"))
    spec = {"config": data}
    if load_chain(**spec).config() != chain.config():
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


def _summarise(data: dict, reasons: list[str]) -> dict:
    """The counts file -> the manifest's counts, with every rule present (zeros too)."""
    seen = sorted(set(data["removed_by_reason"]) - set(reasons))   # never drop a reason
    reasons = list(reasons) + seen
    counts = {k: int(data[k]) for k in ("input", "kept", "removed", "rejected", "edited",
                                        "removed_written")}
    counts["blank_lines_skipped"] = int(data["blank_lines"])   # not records: not in the balance
    counts["rejected_by_cause"] = dict(sorted(data["rejected_by_cause"].items()))
    domains = {}
    for d, v in sorted(data["domains"].items()):
        domains[d] = {"input": v["input"], "kept": v["kept"], "edited": v["edited"],
                      "rejected": v["rejected"],
                      "removed": {r: v["removed"].get(r, 0) for r in reasons}}
    return {
        "counts": counts,
        "removed_by_reason": {r: data["removed_by_reason"].get(r, 0) for r in reasons},
        "removed_written_by_reason": {r: data["removed_written_by_reason"].get(r, 0) for r in reasons},
        "domains": domains,
    }


@locked("filter")
def run_filter(cfg: FilterRunConfig, beam_args: list[str], *, overwrite: bool = False) -> dict:
    t0 = time.time()
    check_beam_args(beam_args)
    fs = BeamFS()
    try:
        files = expand_sources(cfg.input_sources(), fs=fs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_output_outside_inputs(files, cfg.output, cfg.patterns(), fs)
    chain, chain_spec = load_run_chain(cfg, fs)
    names = [sample_name(r, cfg.output_format) for r in chain.reasons]
    if len(set(names)) != len(names):
        raise UsageError(f"two rules share a sample file name: {sorted(chain.reasons)}")
    params = _parameters(cfg, chain, files)

    dry_run = is_dry_run(beam_args)
    prev = reuse_or_clear("filter", fs, cfg.output, params, dry_run=dry_run, overwrite=overwrite,
                          dirs=OUTPUT_DIRS, files=(COUNTS_FILE,))
    if prev is not None:
        return prev

    fields = field_map(cfg)
    p, runner = make_pipeline(beam_args)
    build_filter(p, files, output=cfg.output, fmt=cfg.output_format, fields=fields,
                 chain_spec=chain_spec, removed_sample=cfg.removed_sample,
                 max_doc_bytes=cfg.max_doc_bytes, strict=cfg.strict, split_bytes=cfg.split_bytes)
    ran = run_pipeline(p, "filter", runner, params, dry_run=dry_run, t0=t0)
    if not isinstance(ran, Ran):
        return ran

    data = read_counts(fs, cfg.output, COUNTS_FILE)
    summary = _summarise(data, list(chain.reasons))
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
    manifest = {
        **manifest_head("filter", ok, ran, params),
        "chain": chain.config(),
        "counts": counts,
        "removed_by_reason": summary["removed_by_reason"],
        "removed_sample": {"per_rule": cfg.removed_sample,
                           "written_by_reason": summary["removed_written_by_reason"]},
        "domains": summary["domains"],
        "domain_of_unlabelled": NO_DOMAIN,
        "balance": balance,
        "parts_agree": parts,
        "reconciled": reconciled.as_manifest(),
        "counters": dict(sorted(counters(ran.result, NS).items())),
    }
    fs.delete(fs.join(cfg.output, COUNTS_FILE))   # folded into the manifest
    path = write_manifest(fs, cfg.output, manifest)
    if not balance["ok"]:
        raise BalanceError(f"counts do not balance: {balance} (see {path})")
    reconciled.raise_if_failed(path)
    if not ok:
        raise BalanceError(f"the parts of the counts disagree: {parts} (see {path})")
    return manifest
