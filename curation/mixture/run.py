"""`curate mix`: data -> statistics -> proposers x proxy runs -> the chosen mixture.

Writes into the output directory: ``tokenizer.json`` (the stated tokenizer),
``statistics.json``, ``proxy_cache.jsonl`` (every proxy run; a rerun reuses them),
the search tables and exports of curation.mixture.outputs, and ``summary.json``
(timings, Claude's tokens and cost, skipped proposers, projections) last.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from curation.config import ConfigError
from curation.fs import write_atomic
from curation.io import FieldMap
from curation.mixture.config import MixConfig
from curation.mixture.types import Constraints
from curation.outputs import locked_output


def _proposers(cfg: MixConfig, domains, c, feasible, splits, log, base_url):
    from curation.mixture.proposers import ProposerError, proposer_from_spec
    try:
        baselines = [proposer_from_spec(s, domains, c) for s in cfg.baselines]
        adaptive, skipped = [], {}
        for s in cfg.proposers:
            if s.get("name") != "claude":
                adaptive.append(proposer_from_spec(s, domains, c))
                continue
            extra = sorted(set(s) - {"name"})
            if extra:
                raise ConfigError(f"proposers: claude takes no parameters here ({extra}); "
                                  f"use claude_model, claude_hide_names, claude_max_usd")
            from curation.claude_client import NoApiKey
            from curation.mixture.claude import ClaudeProposer, domain_samples
            try:
                adaptive.append(ClaudeProposer(
                    domains, c, target=cfg.target.describe(), model=cfg.claude_model,
                    hide_names=cfg.claude_hide_names, project=feasible.project,
                    max_usd=cfg.claude_max_usd,
                    samples=domain_samples(splits, cfg.claude_samples, cfg.claude_sample_chars,
                                           cfg.search.seed),
                    **({"client": _client(cfg, base_url)} if base_url else {})))
            except NoApiKey:
                skipped["claude"] = ("skipped: ANTHROPIC_API_KEY is not set (set it to let "
                                     "Claude propose mixtures)")
                log(f"mix: Claude proposer {skipped['claude']}")
    except ProposerError as e:
        raise ConfigError(str(e)) from None
    return baselines, adaptive, skipped


def _client(cfg, base_url):
    from curation.claude_client import Settings, make_client
    return make_client(Settings(model=cfg.claude_model), base_url=base_url)


# what a mix run writes (the proxy cache is not among them: it is kept across runs on
# purpose, and holds results keyed by content)
MIX_FILES = ("tokenizer.json", "statistics.json", "candidates.csv", "ratios.csv", "metrics.csv",
             "mixture.yaml", "megatron_data_path.txt", "olmo_source_mixture.yaml", "fidelity.csv", "summary.json")


def _prepare_output(cfg: MixConfig, log, fs) -> None:
    """Refuse an output that is an input or holds files of ours not written by mix;
    say what a rerun with other settings replaces."""
    from curation.outputs import OutputError, check_stage_paths, claim_output, describe_changes, settings_changes
    paths = list(cfg.inputs or []) + [p for v in (cfg.sources or {}).values()
                                      for p in ([v] if isinstance(v, str) else v)]
    check_stage_paths(paths, cfg.output, fs)
    claim_output(cfg.output, MIX_FILES, "summary.json", "mix")
    try:
        prev = json.loads((Path(cfg.output) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(prev, dict):
        raise OutputError(f"{cfg.output}/summary.json is not a mix summary")
    changes = settings_changes(prev.get("config"), cfg.model_dump(mode="json"))
    log(f"mix: replacing the results in {cfg.output}; " +
        (f"settings changed: {describe_changes(changes)}" if changes else "the same settings "
         "(proxy runs already made are reused from proxy_cache.jsonl)"))


def _sample_summary(cfg: MixConfig, splits, tok, stats: dict, log) -> dict:
    """The sample bound and, per sampled domain, its size and the estimate it gives; a
    sampled domain whose train sample came out short of budget x max_epochs tokens
    (more bytes per token than the bound assumed) is logged."""
    bound = cfg.sample_bytes()
    need = int(cfg.proxy.budget_tokens * cfg.constraints.max_epochs)
    enc = splits.encoded(tok)["train"]
    out: dict = {"max_bytes_per_domain": bound, "train_tokens_wanted": need, "domains": {}}
    for d in splits.domains:
        if not splits.sampled(d):
            continue
        v = stats["domains"][d]
        out["domains"][d] = {"sample_documents": v["sample"]["documents"],
                             "corpus_documents": splits.totals[d]["documents"],
                             "sample_train_tokens": enc[d].n_tokens,
                             "train_tokens_estimated": v["tokens"],
                             "note": v["sample"]["note"]}
        log(f"mix: {d}: sampled {v['sample']['documents']:,} of {splits.totals[d]['documents']:,} "
            f"documents (bound {bound:,} bytes); train tokens {v['tokens']:,} estimated from them")
        if enc[d].n_tokens < need:
            log(f"mix: {d}: the sample's train split has {enc[d].n_tokens:,} tokens, fewer than "
                f"budget x max_epochs = {need:,}; raise sample.max_bytes_per_domain or "
                f"sample.bytes_per_token")
    return out


# the random draws of the fidelity check: a stream of their own, apart from the search's
FIDELITY_STREAM = 0xF1DE


def _backend(section: str, proxy, splits, tok, cfg: MixConfig):
    try:
        if proxy.backend == "transformer":
            from curation.mixture.transformer import TransformerBackend
            return TransformerBackend(splits, tok, target=cfg.target.spec(), **proxy.params)
        from curation.mixture.proxy import NGramBackend
        return NGramBackend(splits, tok, target=cfg.target.spec(), **proxy.params)
    except (ImportError, TypeError, ValueError) as e:   # torch missing, bad parameters
        raise ConfigError(f"{section}: {e}") from None


@locked_output("mix", arg="cfg")
def run_mix(cfg: MixConfig, *, log: Callable[[str], None] = print,
            base_url: str | None = None, progress=None, fs=None) -> dict:
    """``progress`` (a curation.progress.Task) counts proxy runs, cached or computed;
    ``fs`` (a curation.fs.FS) is where the inputs are (default: the local disk)."""
    from curation.mixture.data import load_data_spec
    from curation.mixture.feasibility import FeasibleSet
    from curation.mixture.outputs import write_fidelity, write_mixture, write_tables
    from curation.mixture.proxy import ResultCache
    from curation.mixture.search import run_search
    from curation.mixture.stats import domain_extras, domain_statistics
    from curation.mixture.tokenizer import StatedTokenizer

    if not cfg.output:
        raise ConfigError("mix needs an output directory (--output or output: in the config)")
    t0 = time.time()
    _prepare_output(cfg, log, fs)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    fields = FieldMap(text_field=cfg.text_field, id_field=cfg.id_field,
                      domain_field=cfg.domain_field)
    fractions = (1 - cfg.split.valid - cfg.split.test, cfg.split.valid, cfg.split.test)
    try:
        splits = load_data_spec(cfg.model_dump(include={"demo", "sources", "inputs"}),
                                fields=fields, seed=cfg.split.seed, fractions=fractions, fs=fs,
                                max_bytes=cfg.sample_bytes())
    except ValueError as e:
        raise ConfigError(str(e)) from None
    t_data = time.time()
    tok = StatedTokenizer.for_corpus(splits, str(out), vocab_size=cfg.tokenizer_vocab)
    stats = domain_statistics(splits, tok, **{k: cfg.stages[k] for k in ("dedup", "filter", "score")
                                              if k in cfg.stages})
    domains = splits.domain_infos(tok, domain_extras(stats))
    c = Constraints(min_weight=cfg.constraints.min_weight, max_epochs=cfg.constraints.max_epochs,
                    budget_tokens=cfg.proxy.budget_tokens)
    try:
        feasible = FeasibleSet.build(domains, c)
    except ValueError as e:
        raise ConfigError(f"constraints: {e}") from None
    if cfg.target.weights:
        unknown = sorted(set(cfg.target.weights) - set(splits.domains))
        if unknown:
            raise ConfigError(f"target.weights: unknown domains {unknown}; the domains are "
                              f"{splits.domains}")
    (out / "statistics.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    t_stats = time.time()
    sample = _sample_summary(cfg, splits, tok, stats, log)
    log(f"mix: {len(domains)} domains, {sum(d.tokens for d in domains):,} train tokens under "
        f"{tok.description}" + (" (estimated for the sampled domains)" if sample["domains"] else "")
        + f"; budget {c.budget_tokens:,} tokens per proxy run")

    backend = _backend("proxy", cfg.proxy, splits, tok, cfg)
    larger = cfg.fidelity_proxy()
    larger_backend = None if larger is None else _backend("fidelity", larger, splits, tok, cfg)
    if larger is not None and larger_backend.identity() == backend.identity() \
            and larger.budget_tokens == c.budget_tokens:
        raise ConfigError("fidelity: the larger proxy is the search proxy itself; give it another "
                          "backend, budget_tokens or params (or fidelity: {enabled: false})")
    cache = ResultCache(str(out))

    def runner(be, budget):
        def run_fn(weights, seed, split):
            res = cache.run(be, weights, seed, budget, split)
            if progress is not None:
                progress.advance()
            return res
        return run_fn

    run_fn = runner(backend, c.budget_tokens)

    baselines, adaptive, skipped = _proposers(cfg, domains, c, feasible, splits, log, base_url)
    from curation.mixture.proposers import Natural
    natural = Natural(domains, c).propose([], 1, np.random.default_rng(0))[0].weights
    s = cfg.search
    res = run_search(baselines=baselines, adaptive=adaptive, natural=natural, run_fn=run_fn,
                     rounds=s.rounds, runs_per_round=s.runs_per_round, noise_seeds=s.noise_seeds,
                     final_seeds=s.final_seeds, final_top=s.final_top, seed=s.seed, log=log,
                     skipped=skipped)
    t_search = time.time()
    fid = None
    if larger is not None:
        from curation.mixture.fidelity import describe_proxy, run_fidelity
        from curation.mixture.proposers import proposer_from_spec
        draw = proposer_from_spec({"name": "random"}, domains, c)
        extra = draw.propose([], cfg.fidelity.mixtures, np.random.default_rng([s.seed, FIDELITY_STREAM])) \
            if cfg.fidelity.mixtures else []
        fid = run_fidelity(res, extra, search_fn=run_fn, larger_fn=runner(larger_backend, larger.budget_tokens),
                           seeds=cfg.fidelity.seeds,
                           min_rank_correlation=cfg.fidelity.min_rank_correlation,
                           search_proxy=describe_proxy(cfg.proxy.backend, c.budget_tokens, cfg.proxy.params),
                           larger_proxy=describe_proxy(larger.backend, larger.budget_tokens, larger.params),
                           seed=s.seed, log=log)
        log(f"mix: fidelity: {fid['message']}")
    t_fid = time.time()
    names = splits.domains
    write_tables(out, res, names)
    if fid is not None:
        write_fidelity(out, fid, names)
    else:
        (out / "fidelity.csv").unlink(missing_ok=True)   # an earlier run's, with fidelity on
    settings = {"budget_tokens": c.budget_tokens, "seed": s.seed,
                "constraints": cfg.constraints.model_dump(), "target": cfg.target.spec(),
                "target_description": cfg.target.describe(),
                "backend": backend.identity() if hasattr(backend, "identity") else backend.name,
                "tokenizer": tok.description, "data": cfg.model_dump(
                    mode="json", include={"sources", "inputs", "demo", "split", "text_field",
                             "id_field", "domain_field"}),
                "search": s.model_dump()}
    if larger is not None:
        settings["fidelity"] = {**cfg.fidelity.model_dump(), "larger_proxy": larger.model_dump(),
                                "larger_backend": larger_backend.identity()}
    if sample["domains"]:
        # only then: a mixture whose data all fit is written as it always was
        settings["data_sample"] = sample
    doc = write_mixture(out, res, settings, fidelity=fid)
    claude = next((p for p in adaptive if p.name == "claude"), None)
    summary = {
        "command": "mix", "status": "complete",
        "chosen": doc["weights"], "chosen_strategy": doc["provenance"]["strategy"],
        "chosen_names": doc["names"],
        "test": doc["test"], "against_baselines": doc["against_baselines"],
        "finalists": [{"mixture": f["mixture"], "names": f["names"], "kind": f["kind"]}
                      for f in res.finalists],
        "seed_noise_sd": res.noise_sd, "noise_targets": res.noise_targets,
        "proxy_runs": len(res.trials),
        "proxy_runs_computed": sum(not t.cached for t in res.trials),
        # what differs between a fresh and a resumed run (runs from the cache, seconds)
        # is kept apart, in fidelity_runs_computed and timings_s
        "fidelity": None if fid is None else {k: v for k, v in fid.items() if k not in (
            "runs", "runs_computed", "proxy_seconds", "seconds")},
        "fidelity_runs": 0 if fid is None else len(fid["runs"]),
        "fidelity_runs_computed": 0 if fid is None else sum(fid["runs_computed"].values()),
        "best_so_far": res.best_so_far, "projections": res.projections,
        "skipped_proposers": skipped,
        "data_sample": sample,
        "claude": None if claude is None else {
            "model": claude.model, "hide_names": claude.hide_names, **claude.stats.summary(),
            "rationales": [{"round": t.round, "weights": t.weights,
                            "rationale": t.proposal.rationale if t.proposal else ""}
                           for t in res.trials if t.strategy == "claude" and t.phase == "search"]},
        "timings_s": {"data": round(t_data - t0, 3), "tokenizer_and_stats": round(t_stats - t_data, 3),
                      "search": round(t_search - t_stats, 3),
                      "fidelity": round(t_fid - t_search, 3), "total": round(time.time() - t0, 3)},
        "config": cfg.model_dump(mode="json"),
    }
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return summary
