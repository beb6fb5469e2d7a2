"""The report's numbers beside the funnel: stages, quality scores, the classifier,
the mixture search, the export, cost and time. Each function reads what its stage
wrote and returns a JSON-ready dict; a stage that did not run gives
``{"ran": False, "why": ...}``."""
from __future__ import annotations

import os
import statistics
from collections import defaultdict
from typing import Any

from curation.report.rundir import RunDir, read_csv, read_yaml, rows


def _r(x: Any, nd: int = 6) -> Any:
    """Floats rounded for a stable, readable JSON (the inputs are already fixed)."""
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: _r(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [_r(v, nd) for v in x]
    return x


def _missing(rd: RunDir, name: str) -> dict:
    return {"ran": False, "why": rd.stage(name).why_not}


# ------------------------------------------------------------------ stages

def _stage_summary(name: str, data: dict) -> str:
    c = data.get("counts", {}) if isinstance(data, dict) else {}
    c = {k: f"{v:,}" if isinstance(v, int) else v for k, v in c.items()}
    if name == "dedup":
        return (f"{c.get('input', 0)} in, {c.get('removed_exact', 0)} exact and "
                f"{c.get('removed_near', 0)} near duplicates removed, {c.get('rejected', 0)} "
                f"rejected, {c.get('kept', 0)} kept")
    if name == "filter":
        return (f"{c.get('input', 0)} in, {c.get('removed', 0)} removed, {c.get('rejected', 0)} "
                f"rejected, {c.get('kept', 0)} kept ({c.get('edited', 0)} edited by "
                + ("line-level rules or PII replacement)" if data.get("tallies") else "line-level rules)"))
    if name == "score":
        return (f"{c.get('input', 0)} in, {c.get('scored', 0)} scored, {c.get('removed', 0)} "
                f"removed, {c.get('rejected', 0)} rejected, {c.get('kept', 0)} kept")
    if name == "label":
        return (f"{data.get('labeler')} labeler: {c.get('labelled', 0)} of {c.get('sampled', 0)} "
                f"sampled documents labelled ({c.get('hq', 0)} hq, {c.get('lq', 0)} lq, "
                f"{c.get('failed', 0)} failed)")
    if name == "train":
        h = data.get("held_out", {})
        f1 = h.get("f1")
        return f"held-out F1 {f1:.4f}" if isinstance(f1, (int, float)) else "trained"
    if name == "mix":
        return (f"chose {data.get('chosen_strategy')} after {data.get('proxy_runs')} proxy runs")
    if name == "export":
        return (f"{data.get('tokens_achieved', 0):,} of {data.get('tokens_asked', 0):,} tokens "
                f"in {len(data.get('domains', {}))} domains")
    return ""


def stages_section(rd: RunDir) -> dict:
    """What ran. Whether a stage was reused or run afresh is execution detail, and lives
    with the timings."""
    out = []
    for name, st in rd.stages.items():
        e = st.run_entry
        out.append({"name": name, "dir": st.dir, "ran": st.ran, "complete": st.complete,
                    "summary": _stage_summary(name, st.data) if st.ran else None,
                    "why_not": st.why_not, "fallback": e.get("fallback")})
    run = rd.run or {}
    return {"run_json": rd.run is not None, "seed": run.get("seed"), "fallbacks": list(run.get("fallbacks") or []),
            "stages": out}


# ------------------------------------------------------------------ the way in: a crawl

CRAWL_EXAMPLES = 3
PII_CONTEXT = 90


def crawl_section(rd: RunDir) -> dict:
    """What a crawl's way in did: WARC responses that gave no document (by cause, with
    examples from dedup's rejected/) and the PII the filter replaced (its tallies, with
    excerpts around placeholders in the filter's kept documents). URL blocking and
    decontamination are filter rules, shown with the others. Empty ({}) when the run
    read no WARC and redacted nothing."""
    from curation.io.warc import WARC_CAUSES
    out: dict[str, Any] = {}
    dedup, filt = rd.stage("dedup"), rd.stage("filter")
    if dedup.complete:
        c = dedup.data.get("counts", {})
        causes = {k: v for k, v in (c.get("rejected_by_cause") or {}).items() if k in WARC_CAUSES}
        skipped = int(c.get("warc_records_skipped", 0))
        if causes or skipped:
            examples: dict[str, list] = {k: [] for k in causes}
            for r in rows(dedup.file("rejected")):
                ex = examples.get(str(r.get("cause")))
                if ex is not None and len(ex) < CRAWL_EXAMPLES:
                    ex.append({"record": int(r.get("line") or 0), "file": os.path.basename(str(r.get("file"))),
                               "detail": str(r.get("detail") or "")})
            out["extraction"] = {"responses_rejected": dict(sorted(causes.items())),
                                 "other_records_skipped": skipped, "examples": examples}
    if filt.complete and filt.data.get("tallies"):
        tallies = filt.data["tallies"]
        pii = next((f for f in filt.data.get("chain", []) if f.get("name") == "pii"), None)
        marks = (pii or {}).get("placeholders") or {}
        found: dict[str, list] = {k: [] for k in marks}
        for r in rows(filt.file("documents")):
            text = str(r.get("text") or "")
            for kind, mark in marks.items():
                i = text.find(mark)
                if i >= 0 and len(found[kind]) < CRAWL_EXAMPLES:
                    a, b = max(0, i - PII_CONTEXT), i + len(mark) + PII_CONTEXT
                    found[kind].append({"id": str(r.get("id")), "domain": r.get("domain"),
                                        "excerpt": " ".join(text[a:b].split())})
            if all(len(v) >= CRAWL_EXAMPLES for v in found.values()):
                break
        out["tallies"] = dict(sorted(tallies.items()))
        out["edited"] = int(filt.data.get("counts", {}).get("edited", 0))
        out["pii_examples"] = found
    return out


# ------------------------------------------------------------------ scores and classifier

def scores_section(rd: RunDir) -> dict:
    st = rd.stage("score")
    if not st.complete:
        return _missing(rd, "score")
    m = st.data
    sel = m.get("selection", {})
    sc = m.get("scores", {})
    doms = m.get("domains", {})
    per_sel = sel.get("domains", {})

    def summary(s: dict, threshold) -> dict:
        dec = s.get("deciles", {})
        return _r({"count": s.get("count"), "mean": s.get("mean"), "min": s.get("min"),
                   "max": s.get("max"), "p10": dec.get("p10"), "p50": dec.get("p50"),
                   "p90": dec.get("p90"), "histogram": list(s.get("per_0.05", [])),
                   "threshold": threshold})

    domains = {}
    for d, s in sorted(sc.get("domains", {}).items()):
        thr = per_sel.get(d, {}).get("threshold", sel.get("threshold"))
        v = doms.get(d, {})
        domains[d] = {**summary(s, thr), "kept": v.get("kept"), "removed": v.get("removed"),
                      "kept_fraction": _r(per_sel.get(d, {}).get("kept_fraction"))}
    return {"ran": True, "mode": sel.get("mode"), "by": sel.get("by"), "asked": sel.get("asked"),
            "achieved": _r(sel.get("achieved")), "threshold": _r(sel.get("threshold")),
            "bin_width": 0.05, "corpus": summary(sc.get("corpus", {}), sel.get("threshold")),
            "domains": domains}


def classifier_section(rd: RunDir) -> dict:
    """The classifier's agreement with its labels on the held-out split: from
    classifier/metrics.json, else the copy the score manifest keeps."""
    st, score = rd.stage("train"), rd.stage("score")
    if st.complete:
        m, source = st.data, f"{st.dir}/metrics.json"
    elif score.complete and (score.data.get("model") or {}).get("held_out"):
        sm = score.data["model"]
        m = {"held_out": sm["held_out"], "hyperparameters": sm.get("hyperparameters"),
             "counts": sm.get("label_counts"), "threshold": sm.get("label_threshold")}
        source = f"{score.dir}/manifest.json (the model section)"
    else:
        return _missing(rd, "train")
    h = m.get("held_out", {})
    hp = m.get("hyperparameters") or {}
    c = m.get("counts") or {}
    dist = (m.get("label_distribution") or {}).get("all") or {}
    out = {"ran": True, "source": source, "label_threshold": m.get("threshold"),
           "held_out": _r({k: h.get(k) for k in ("accuracy", "f1", "precision", "recall", "roc_auc",
                                                   "spearman_prob_vs_score")}),
           "confusion_matrix": h.get("confusion_matrix"),
           "counts": {k: c.get(k) for k in ("labels_used", "fit", "test") if k in c},
           "labels": {k.replace("__label__", ""): v for k, v in dist.items()},
           "hyperparameters": {k: hp.get(k) for k in ("epoch", "lr", "dim", "wordNgrams") if k in hp}}
    lab = rd.stage("label")
    if lab.complete:
        s = lab.data
        rubric = s.get("rubric") or {}
        out["labeler"] = {"labeler": s.get("labeler"), "model": s.get("model"),
                          "rubric": rubric.get("name"), "scale": rubric.get("scale"),
                          "threshold": s.get("threshold"), "counts": s.get("counts")}
        if s.get("labeler") == "heuristic":
            # what its scores measure: the rule sets it counts
            from curation.filters import heuristic_label_chain
            out["labeler"]["rule_sets"] = [f.name for f in heuristic_label_chain()]
    return out


# ------------------------------------------------------------------ the mixture search

def _float(x: str) -> float:
    return float(x) if x not in ("", None) else float("nan")


def _finalists(rows: list[dict], domains: list[str], chosen_key: str | None, chosen_strategy,
               names: dict[str, list[str]] | None = None) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["phase"] == "final":
            groups[(r["strategy"], r["mixture"])].append(r)

    def sd(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    out = []
    for (strategy, key), rs in groups.items():
        targets = [_float(r["target_bpb"]) for r in rs]
        bpb = {d: [_float(r[f"bpb_{d}"]) for r in rs] for d in domains}
        out.append(_r({"strategy": strategy, "mixture": key, "round": int(rs[0]["round"]),
                       "names": (names or {}).get(key) or [strategy],
                       "baseline": int(rs[0]["round"]) == 0,
                       "chosen": key == chosen_key and strategy == chosen_strategy,
                       "seeds": len(rs), "target_mean": statistics.fmean(targets),
                       "target_sd": sd(targets),
                       "bpb_mean": {d: statistics.fmean(v) for d, v in bpb.items()},
                       "bpb_sd": {d: sd(v) for d, v in bpb.items()}}))
    # the chosen first, then the baselines, then the other finalists, each by target
    out.sort(key=lambda f: (not f["chosen"], not f["baseline"], f["target_mean"], f["strategy"]))
    return out


def mixture_section(rd: RunDir) -> dict:
    st = rd.stage("mix")
    if not st.complete:
        return _missing(rd, "mix")
    s = st.data
    out: dict[str, Any] = {"ran": True}
    mix_path, cand_path = st.file("mixture.yaml"), st.file("candidates.csv")
    doc = read_yaml(mix_path) if os.path.isfile(mix_path) else {}
    rows = read_csv(cand_path) if os.path.isfile(cand_path) else []
    domains = [c[2:] for c in (rows[0].keys() if rows else []) if c.startswith("w_")]
    if not domains:
        domains = sorted((doc.get("weights") or s.get("chosen") or {}))
    settings = doc.get("settings") or {}
    out["domains"] = domains
    out["target"] = settings.get("target_description")
    out["budget_tokens"] = settings.get("budget_tokens")
    out["tokenizer"] = settings.get("tokenizer")
    backend = settings.get("backend")
    out["backend"] = backend.get("backend") if isinstance(backend, dict) else backend
    phases = defaultdict(int)
    for r in rows:
        phases[r["phase"]] += 1
    out["runs"] = {"noise": phases["noise"], "search": phases["search"], "final": phases["final"],
                   "total": s.get("proxy_runs")}
    out["candidates"] = [_r({"run": int(r["run"]), "strategy": r["strategy"], "round": int(r["round"]),
                             "weights": {d: _float(r[f"w_{d}"]) for d in domains},
                             "valid_target": _float(r["target_bpb"])})
                         for r in rows if r["phase"] == "search"]
    if not rows:
        out["candidates_why"] = f"{st.dir}/candidates.csv is missing"
    out["best_so_far"] = _r(s.get("best_so_far") or {})
    prov = doc.get("provenance") or {}
    chosen_key = next((r["mixture"] for r in rows if r["phase"] == "search"
                       and int(r["run"]) == prov.get("search_run")), None)
    out["chosen"] = _r({"strategy": prov.get("strategy", s.get("chosen_strategy")),
                        "round": prov.get("round"), "search_run": prov.get("search_run"),
                        "weights": doc.get("weights") or s.get("chosen"),
                        "rationale": prov.get("rationale"), "projection": prov.get("projection"),
                        "chosen_by": prov.get("chosen_by"),
                        "validation_target": doc.get("validation_target_bpb"),
                        "test": doc.get("test") or s.get("test")})
    names = {f["mixture"]: f["names"] for f in s.get("finalists") or []}
    out["chosen"]["names"] = doc.get("names") or s.get("chosen_names") or [out["chosen"]["strategy"]]
    out["finalists"] = _finalists(rows, domains, chosen_key, out["chosen"]["strategy"], names)
    out["seed_noise_sd"] = _r(s.get("seed_noise_sd"))
    out["against_baselines"] = _r([{k: v for k, v in c.items() if k != "differences"}
                                   for c in doc.get("against_baselines") or s.get("against_baselines") or []])
    out["fidelity"] = _fidelity(s)
    out["claude"] = _claude(s)
    return out


def _fidelity(s: dict) -> dict:
    f = s.get("fidelity")
    if not f:
        return {"ran": False, "why": "the fidelity check was off (fidelity.enabled: false)"}
    keep = ("supported", "message", "search_proxy", "larger_proxy", "split", "spearman", "kendall",
            "min_rank_correlation", "winner")
    out = {k: f.get(k) for k in keep}
    out["seeds"] = len(f.get("seeds") or [])
    out["runs"] = s.get("fidelity_runs")
    out["mixtures"] = [{k: m[k] for k in ("mixture", "kind", "names", "search_target_mean",
                                          "larger_target_mean")} for m in f.get("mixtures") or []]
    out["against_baselines"] = [{k: v for k, v in c.items() if k != "differences"}
                                for c in f.get("against_baselines") or []]
    return _r({"ran": True, **out})


def _claude(s: dict) -> dict:
    skipped = (s.get("skipped_proposers") or {}).get("claude")
    c = s.get("claude")
    if skipped:
        return {"status": "skipped", "why": skipped}
    if c is None:
        return {"status": "absent", "why": "Claude was not among the configured proposers."}
    return _r({"status": "ran", "model": c.get("model"), "hide_names": c.get("hide_names"),
               "calls": c.get("calls"), "failed": c.get("failed"),
               "rationales": [{"round": x.get("round"), "weights": x.get("weights"),
                               "rationale": x.get("rationale")} for x in c.get("rationales", [])]})


def export_section(rd: RunDir) -> dict:
    st = rd.stage("export")
    if not st.complete:
        return _missing(rd, "export")
    m = st.data
    return _r({"ran": True, "tokens_asked": m.get("tokens_asked"), "tokens_achieved": m.get("tokens_achieved"),
               "tokenizer": m.get("tokenizer"), "seed": m.get("seed"),
               "domains": {d: {k: v.get(k) for k in ("weight", "tokens_asked", "tokens_achieved",
                                                     "documents", "epochs", "shards")}
                           for d, v in sorted(m.get("domains", {}).items())}})


# ------------------------------------------------------------------ cost and time

def cost_section(rd: RunDir) -> dict:
    """API tokens and dollars per stage: run.json's figures where it has them, else the
    stages' own summaries (label summary.json, mix summary.json's Claude)."""
    rows = []
    lab, mix = rd.stage("label"), rd.stage("mix")
    own: dict[str, dict] = {}
    if lab.complete:
        s = lab.data
        t = s.get("tokens") or {}
        own["label"] = {"what": f"labelling ({s.get('labeler')}"
                                + (f", {s.get('model')}" if s.get("model") else "") + ")",
                        "input_tokens": t.get("input", 0), "output_tokens": t.get("output", 0),
                        "cache_read_tokens": t.get("cache_read", 0),
                        "cache_write_tokens": t.get("cache_write", 0),
                        "usd": s.get("cost_usd", 0.0), "source": f"{lab.dir}/summary.json"}
    if mix.complete:
        c = mix.data.get("claude")
        if c:
            own["mix"] = {"what": f"Claude proposer ({c.get('model')}, {c.get('calls')} calls)",
                          "input_tokens": c.get("input_tokens", 0),
                          "output_tokens": c.get("output_tokens", 0),
                          "usd": c.get("cost_usd", 0.0), "source": f"{mix.dir}/summary.json"}
        else:
            why = (mix.data.get("skipped_proposers") or {}).get("claude", "not configured")
            own["mix"] = {"what": f"Claude proposer: {why}", "input_tokens": 0, "output_tokens": 0,
                          "usd": 0.0, "source": f"{mix.dir}/summary.json"}
    for name, st in rd.stages.items():
        e = st.run_entry
        row = dict(own.get(name, {}))
        if e.get("cost_usd") is not None or e.get("api_tokens"):
            tok = e.get("api_tokens") or {}
            row.update({"what": row.get("what", name), "usd": e.get("cost_usd") or 0.0,
                        "input_tokens": tok.get("input", row.get("input_tokens", 0)),
                        "output_tokens": tok.get("output", row.get("output_tokens", 0)),
                        "source": "run.json"})
        if row:
            rows.append(_r({"stage": name, **row}))
    proxy = None
    if mix.complete:
        # compute, not API dollars: what the search and its fidelity check each ran
        proxy = {"search_runs": mix.data.get("proxy_runs"),
                 "fidelity_runs": mix.data.get("fidelity_runs", 0),
                 "larger_proxy": (mix.data.get("fidelity") or {}).get("larger_proxy")}
    return {"rows": rows, "total_usd": _r(sum(r.get("usd") or 0.0 for r in rows)),
            "proxy_runs": proxy,
            "why_empty": None if rows else
            "no stage that calls an API ran (label and mix are absent)"}


def timings_section(rd: RunDir) -> dict:
    """Seconds per stage: run.json when `curate run` wrote it, else each stage's own
    record (manifest timings_s.total, label and export elapsed_s, mix timings_s.total);
    peak memory and CPU seconds where run.json has them.
    Everything here changes from run to run; the rest of the report does not."""
    out = {}
    for name, st in rd.stages.items():
        e, d = st.run_entry, st.data if isinstance(st.data, dict) else {}
        secs, source = None, None
        if e.get("seconds") is not None:
            secs, source = e["seconds"], "run.json"
        elif st.ran:
            t = d.get("timings_s") or {}
            for value, where in ((t.get("total"), "timings_s.total"), (d.get("elapsed_s"), "elapsed_s")):
                if value is not None:
                    secs, source = value, f"{st.dir}: {where}"
                    break
        mem = e.get("peak_memory_mib") or {}
        out[name] = {"seconds": _r(secs, 3), "source": source, "run_status": e.get("status"),
                     "finished_at": d.get("finished_at"),
                     # `curate run` samples the process tree (its Beam workers included)
                     "peak_pss_mib": mem.get("pss"), "cpu_s": e.get("cpu_s")}
        if name == "mix":
            # how many came from the cache depends on what earlier runs left: not a result
            out[name]["proxy_runs_computed"] = d.get("proxy_runs_computed")
            out[name]["fidelity_runs_computed"] = d.get("fidelity_runs_computed")
            out[name]["fidelity_seconds"] = (d.get("timings_s") or {}).get("fidelity")
    known = [v["seconds"] for v in out.values() if v["seconds"] is not None]
    return {"stages": out, "total_seconds": _r(sum(known), 3) if known else None,
            "run_status": (rd.run or {}).get("status")}
