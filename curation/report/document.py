"""The report as sections of blocks (paragraphs, tables, plots, excerpts, diffs),
built once from the report's numbers and rendered twice: to HTML and to Markdown
(curation.report.render). Text in blocks is plain; renderers escape it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curation.mixture.paired import describe_interval
from curation.report import svg
from curation.report.funnel import DIFF_WORDS

MISSING = "—"
# held-out F1 below this: the report says plainly that the classifier agrees poorly with
# its labels, before the selection it drove
POOR_F1 = 0.7


@dataclass
class P:
    text: str
    note: bool = False          # a muted remark (why something is missing, how it was counted)
    warn: bool = False          # a caution the reader must not miss (set apart, in bold in Markdown)


@dataclass
class Sub:
    title: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    text_cols: int = 1          # leading columns of text (left-aligned); the rest are numbers


@dataclass
class Plot:
    svg: str
    title: str


@dataclass
class Excerpt:
    title: str
    text: str
    meta: str = ""


@dataclass
class Diff:
    title: str
    left_title: str
    right_title: str
    left: list[list[str]]       # [op, text]: "=" same, "-" only on the left
    right: list[list[str]]      # "=" same, "+" only on the right
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


def n(x: Any) -> str:
    """A count with thousands separators; the dash for a missing value."""
    if x is None:
        return MISSING
    if isinstance(x, float):
        return f"{x:,.4f}"
    return f"{x:,}"


def f4(x: Any) -> str:
    return MISSING if x is None else f"{x:.4f}"


def seconds(x: Any) -> str:
    return MISSING if x is None else f"{x:,.1f}"


def plain(x: Any) -> str:
    """A value as words for a reader: mappings as "key value" pairs, lists joined, never a
    Python repr."""
    if isinstance(x, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {plain(v)}" for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return ", ".join(plain(v) for v in x)
    if isinstance(x, float):
        return f"{x:g}"
    return MISSING if x is None else str(x)


def pct(x: Any) -> str:
    return MISSING if x is None else f"{x:.1%}"


def _stage_section(sid: str, title: str):
    """A section drawn from r[sid] by the decorated fn(sec, data, r) when its stage ran;
    else one line saying why not."""
    def wrap(fn):
        def build(r: dict) -> Section:
            data, sec = r[sid], Section(sid, title)
            if not data.get("ran"):
                sec.blocks.append(P(f"Not available: {data.get('why') or 'the stage did not run'}.", True))
            else:
                fn(sec, data, r)
            return sec
        return build
    return wrap


# ------------------------------------------------------------------ stages

def stages_blocks(r: dict) -> Section:
    s = r["stages"]
    sec = Section("stages", "Stages and checks")
    sec.blocks.append(P(f"Tokens are counted with: {r['funnel']['tokens']['description']}."))
    if not s["run_json"]:
        sec.blocks.append(P("There is no run.json (the stages were run by hand): time, cost and "
                            "fallbacks per stage come from the stages' own files where they "
                            "keep them.", True))
    elif s.get("seed") is not None:
        sec.blocks.append(P(f"Run seed: {s['seed']}."))
    sec.blocks.append(Table(["stage", "directory", "ran", "what it did, or why it did not run", "fallback"],
                            [[x["name"], x["dir"] + "/", "yes" if x["complete"] else "no",
                              x["summary"] if x["complete"] else x["why_not"], x["fallback"] or ""]
                             for x in s["stages"]], text_cols=99))
    shown = {x["fallback"] for x in s["stages"]}
    for f in s["fallbacks"]:
        if f not in shown:        # run.json lists each stage's fallback again
            sec.blocks.append(P(f"Fallback: {f}", True))
    sec.blocks.append(Sub("Checks"))
    sec.blocks.append(Table(["check", "result", "detail"],
                            [[c["name"], "ok" if c["ok"] else "FAILED", c["detail"]] for c in r["checks"]],
                            text_cols=99))
    return sec


# ------------------------------------------------------------------ funnel

FUNNEL_GROUPS = (("exact duplicates", ("exact_duplicate",)), ("near duplicates", ("near_duplicate",)),
                 ("filter rules", None), ("classifier", ("classifier",)), ("rejected", ("rejected",)),
                 ("not on file", ("not_on_file",)), ("kept", ("kept",)))


def _funnel_plot(f: dict, unit: str) -> Plot | None:
    doms = list(f["domains"])
    groups = [(g, keys) for g, keys in FUNNEL_GROUPS if not (unit == "documents" and g == "not on file")]
    values = []
    for d in doms:
        v = f["domains"][d][unit]
        row = []
        for _, keys in groups:
            ks = keys or [k for k in f["rows"] if k.startswith("filter:")]
            if keys == ("rejected",):     # with the WARC responses that gave no document
                ks = [*keys, *(k for k in f["rows"] if k.startswith("extraction:"))]
            row.append(sum(v.get(k) or 0 for k in ks))
        values.append(row)
    if not doms or not any(any(x > 0 for x in row) for row in values):
        return None
    title = f"Where each domain's {unit} went (share of its input)"
    colors = ["#9c755f", "#b07aa1", "#e15759", "#f28e2b", "#bab0ac", "#edc948", "#59a14f"]
    if unit == "documents":
        colors = colors[:5] + colors[6:]
    return Plot(svg.stacked_hbar(f"funnel-{unit}", doms, [g for g, _ in groups], values, title=title,
                                 colors=colors), title)


def funnel_blocks(r: dict) -> Section:
    f = r["funnel"]
    sec = Section("funnel", "The funnel per domain")
    if not f["domains"]:
        sec.blocks.append(P("Not available: none of dedup, filter and score ran.", True))
        return sec
    sec.blocks.append(P(f"Where every input document went, stage by stage ({', '.join(f['stages'])}), "
                        f"per domain; a dash means the stage did not run or the number is not "
                        f"available."))
    doms = list(f["domains"])
    for unit in ("documents", "tokens"):
        sec.blocks.append(Sub(f"In {unit}"))
        if unit == "tokens":
            sec.blocks.append(P(f"Tokens: {f['tokens']['description']}."
                                + (" Rows marked ≥ are lower bounds (see the notes)." if f["tokens_partial"] else ""),
                                True))
        rows = []
        for k in f["rows"]:
            if unit == "documents" and k == "not_on_file":
                continue
            mark = " (≥)" if unit == "tokens" and k in f["tokens_partial"] else ""
            rows.append([f["labels"][k] + mark]
                        + [n(f["domains"][d][unit][k]) for d in doms] + [n(f["total"][unit][k])])
        if unit == "documents":
            rows.append(["balanced (input = the rest)"]
                        + ["yes" if f["domains"][d]["balanced"] else "NO" for d in doms]
                        + ["yes" if f["total"]["balanced"] else "NO"])
        sec.blocks.append(Table([unit] + doms + ["total"], rows))
        plot = _funnel_plot(f, unit)
        if plot:
            sec.blocks.append(plot)
    for note in f["notes"]:
        sec.blocks.append(P(note, True))
    return sec


# ------------------------------------------------------------------ clusters

def _diff_title(m: dict) -> str:
    return f"removed ({m['reason'].replace('_', ' ')}): {m['id']}"


def clusters_blocks(r: dict) -> Section:
    c = r["clusters"]
    sec = Section("clusters", "Near-duplicate clusters")
    if not c.get("ran"):
        sec.blocks.append(P(f"Not available: {r['stages_by_name']['dedup']['why_not']}.", True))
        return sec
    if not c["clusters"]:
        sec.blocks.append(P("Dedup found no duplicates: there are no clusters.", True))
        return sec
    thr = f" (Jaccard threshold {c['threshold']})" if c.get("threshold") is not None else ""
    sec.blocks.append(P(f"{n(c['clusters'])} clusters{thr} hold {n(c['documents_in_clusters'])} "
                        f"documents; one per cluster is kept (the first in input order), "
                        + ", ".join(f"{n(v)} removed as {k.replace('_', ' ')}s"
                                    for k, v in c["removed_by_reason"].items()) + "."))
    sizes = c["size_histogram"]
    title = "Cluster sizes (documents per cluster)"
    sec.blocks.append(Plot(svg.bar_chart("cluster-sizes", [str(s) for s, _ in sizes], [k for _, k in sizes],
                                         title=title, xlabel="cluster size", ylabel="clusters"), title))
    sec.blocks.append(Table(["cluster size", "clusters"], [[str(s), n(k)] for s, k in sizes]))
    kc = c.get("kept_check") or {}
    if kc.get("members_checked") is not None:
        sec.blocks.append(P(
            f"Every removal was checked against the document its cluster keeps (at least "
            f"{kc['threshold']:.3g}, {kc['measure']}): {n(kc['members_split'])} of "
            f"{n(kc['members_checked'])} members only chained to it and were split off "
            f"({n(kc['new_clusters'])} new clusters, {n(kc['documents_left_alone'])} documents "
            f"left alone and kept)."))
    big = c.get("largest") or []
    if big:
        sec.blocks.append(Sub("The largest clusters"))

        def spread(x):
            j = x["jaccard"]
            return MISSING if not j else f"{j['min']:.3f} / {j['median']:.3f} / {j['max']:.3f}"

        def pair(x):
            p = x["pair"]
            return MISSING if not p else f"{p['kept']} ~ {p['member']} ({p['jaccard']:.3f})"
        sec.blocks.append(Table(["kept document", "least similar pair",
                                 "Jaccard with the kept one (min / median / max)", "size"],
                                [[x["kept"] or x["cluster_id"], pair(x), spread(x), n(x["size"])]
                                 for x in big], text_cols=3))
    sec.blocks.append(Sub("Examples: the kept document beside a member removed as its duplicate"))
    sec.blocks.append(P("Chosen by rule: clusters with a near duplicate first, then the largest, "
                        "then by cluster id; each cluster once, beside the removed member whose "
                        "words differ most from the kept one. Words only on the left are struck "
                        "out, words only on the right are highlighted.", True))
    if c.get("identical_passed_over"):
        sec.blocks.append(P(f"{c['identical_passed_over']} cluster(s) earlier in that order were passed "
                            f"over: their members read the same in the first {DIFF_WORDS} words.", True))
    if not c["examples"]:
        sec.blocks.append(P("No cluster shows a difference in the words compared: there is no example "
                            "to show.", True))
    for ex in c["examples"]:
        kept, m = ex["kept"] or {}, ex["shown"]
        others = ex["removed_in_cluster"] - 1
        head = f"Cluster {ex['cluster_id']} ({ex['size']} documents)"
        if "diff" not in m:
            sec.blocks.append(P(f"{head}: {m['id']} ({m['reason'].replace('_', ' ')}): texts not "
                                f"available (the inputs cannot be read now).", True))
            continue
        d = m["diff"]
        cap = f"{d['similarity']:.0%} of words in common" + (
            f" (the first {DIFF_WORDS} words of each compared)" if d["truncated"] else "") + (
            f"; {others} more removed member(s) of this cluster not shown" if others else "")
        sec.blocks.append(Diff(head, f"kept: {kept.get('id')}", _diff_title(m), d["left"], d["right"], cap))
    return sec


# ------------------------------------------------------------------ the way in: a crawl

CRAWL_CAUSES = {"not_html": "not HTML", "undecodable_html": "HTML that does not decode",
                "empty_extraction": "no main text"}
PII_KINDS = {"email": "e-mail addresses", "ip_address": "IP addresses", "phone": "phone numbers"}


def crawl_blocks(r: dict) -> Section:
    c = r["crawl"]
    sec = Section("crawl", "The way in: extraction and PII")
    ex = c.get("extraction")
    if ex:
        causes = ex["responses_rejected"]
        sec.blocks.append(P(f"WARC input: {n(sum(causes.values()))} responses gave no document "
                            f"and are rejected with their cause; {n(ex['other_records_skipped'])} "
                            f"records other than responses (warcinfo, requests, metadata) are not "
                            f"documents and were skipped, counted. URL blocking and benchmark "
                            f"decontamination are filter rules, under Filter rules."))
        if causes:
            sec.blocks.append(Table(["cause", "responses"],
                                    [[CRAWL_CAUSES.get(k, k) + f" ({k})", n(v)] for k, v in causes.items()]))
        for k, v in causes.items():
            for e in ex["examples"].get(k, []):
                sec.blocks.append(P(f"{k}: {e['file']} record {e['record']}: {e['detail']}", True))
    if "tallies" in c:
        t = c["tallies"]
        sec.blocks.append(P(f"PII replaced by placeholders in the documents the filter kept "
                            f"({n(c['edited'])} documents edited by the filters in all): "
                            + ", ".join(f"{n(v)} {PII_KINDS.get(k.split('.', 1)[-1], k)}"
                                        for k, v in t.items()) + "."))
        for kind, exs in c["pii_examples"].items():
            for e in exs:
                sec.blocks.append(Excerpt(f"{PII_KINDS.get(kind, kind)}: {e['id']} ({e['domain']})",
                                          e["excerpt"], ""))
    return sec


# ------------------------------------------------------------------ filters

def filters_blocks(r: dict) -> Section:
    fr = r["filter_rules"]
    sec = Section("filters", "Filter rules")
    if not fr:
        sec.blocks.append(P(f"Not available: {r['stages_by_name']['filter']['why_not']}.", True))
        return sec
    by = fr["removed_by_reason"]
    total_written = {k: sum(v.values()) for k, v in fr["written"].items()}
    tok = r["funnel"]["total"]["tokens"]
    partial = set(r["funnel"]["tokens_partial"])
    cap = fr["removed_sample"]
    sec.blocks.append(P(f"{n(sum(by.values()))} documents removed by {sum(1 for v in by.values() if v)} "
                        f"of {len(by)} rules. " + (
                            f"removed/ holds at most {cap} documents per rule (--removed-sample), so "
                            f"the token counts of the rules that removed more are partial."
                            if cap is not None else "removed/ holds every removed document.")))
    active = [k for k, v in by.items() if v]
    if active:
        title = "Documents removed per rule"
        sec.blocks.append(Plot(svg.hbar_chart("filter-rules", active, [by[k] for k in active], title=title,
                                              xlabel="documents"), title))
    sec.blocks.append(Table(["rule", "documents", "tokens", "written to removed/"],
                            [[k, n(v), (n(tok.get("filter:" + k)) + (" (≥)" if "filter:" + k in partial else ""))
                              if v else "0", n(total_written.get(k, 0))] for k, v in by.items() if v]))
    idle = [k for k, v in by.items() if not v]
    if idle:
        sec.blocks.append(P("Rules that removed nothing: " + ", ".join(idle) + ".", True))
    for k in active:
        exs = fr["examples"].get(k, [])
        sec.blocks.append(Sub(f"{k}: {n(by[k])} removed"))
        if not exs:
            sec.blocks.append(P("No removed document of this rule was written to removed/.", True))
        for e in exs:
            sig = ", ".join(f"{s.split('.', 1)[-1]} {plain(v)}" for s, v in e["signals"].items())
            sec.blocks.append(Excerpt(f"{e['id']} ({e['domain']}, {n(e['chars'])} characters)",
                                      e["excerpt"], f"signals: {sig}" if sig else ""))
    return sec


# ------------------------------------------------------------------ scores and classifier

def poor_agreement(r: dict, short: bool = False) -> str | None:
    """The plain warning when the classifier agrees poorly with its labels, else None;
    ``short``: without what it means for the selection."""
    c = r.get("classifier") or {}
    f1 = (c.get("held_out") or {}).get("f1") if c.get("ran") else None
    if f1 is None or f1 >= POOR_F1:
        return None
    h = c["held_out"]
    said = (f"Warning: the quality classifier agrees poorly with its labels: held-out F1 "
            f"{f1:.2f} (below {POOR_F1}; precision {h.get('precision') or 0:.2f}, recall "
            f"{h.get('recall') or 0:.2f}).")
    return said if short else (said + " The selection below follows its scores, so which documents "
                               "it kept is weakly supported by the labels; see \"The classifier "
                               "against its labels\".")


@_stage_section("scores", "Quality scores")
def scores_blocks(sec: Section, s: dict, r: dict) -> None:
    warning = poor_agreement(r)
    if warning:
        sec.blocks.append(P(warning, warn=True))
    how = {"keep_top": f"keep the top {pct(s['asked'])} of {'the corpus' if s['by'] == 'corpus' else 'each domain'}",
           "min_score": f"keep scores ≥ {f4(s['threshold'])}", "all": "keep every document"}
    sec.blocks.append(P(f"Selection: {how.get(s['mode'], s['mode'])}"
                        + (f"; kept {pct(s['achieved'])} of the scored documents" if s["achieved"] is not None else "")
                        + (f"; threshold {f4(s['threshold'])}" if s["threshold"] is not None else "") + "."))
    panels = [(d, v["histogram"], v["threshold"]) for d, v in s["domains"].items() if v["histogram"]]
    if panels:
        title = "Quality scores per domain: documents per bin of 0.05 (dashed: the cut)"
        sec.blocks.append(Plot(svg.histograms("score-histograms", panels, title=title), title))
        if any(svg.log_counts(h) for _, h, _ in panels):
            sec.blocks.append(P("A panel marked \"log count axis\" has one bin holding most of its "
                                "documents; its bars are drawn on a logarithmic count axis so that "
                                "the other bins stay readable.", True))
        low = [d for d, v in s["domains"].items()
               if v["threshold"] is not None and v["threshold"] < s["bin_width"]]
        if low:
            sec.blocks.append(P(f"The cut lies inside the first bin (scores below {s['bin_width']}) "
                                f"for {', '.join(low)}: the table gives its value and the deciles.",
                                True))
    sec.blocks.append(Table(["domain", "scored", "mean", "p10", "p50", "p90", "threshold", "kept", "removed"],
                            [[d, n(v["count"]), f4(v["mean"]), f4(v["p10"]), f4(v["p50"]), f4(v["p90"]),
                              f4(v["threshold"]), n(v["kept"]), n(v["removed"])]
                             for d, v in s["domains"].items()]))


@_stage_section("classifier", "The classifier against its labels")
def classifier_blocks(sec: Section, c: dict, r: dict) -> None:
    h = c["held_out"]
    warning = poor_agreement(r, short=True)
    if warning:
        sec.blocks.append(P(warning, warn=True))
    sec.blocks.append(P(f"Held-out agreement of the fastText classifier with the labels it was "
                        f"trained on (hq = score ≥ {c['label_threshold']}), from {c['source']}."))
    sec.blocks.append(Table(["metric", "value"],
                            [[k.replace("_", " "), f4(h[k])] for k in ("f1", "precision", "recall",
                                                                      "roc_auc", "accuracy",
                                                                      "spearman_prob_vs_score")
                             if k in h]))
    cm = c.get("confusion_matrix")
    if cm:
        sec.blocks.append(Sub("Confusion matrix (held-out split)"))
        sec.blocks.append(Table(["label \\ predicted", "hq", "lq"],
                                [["hq", n(cm.get("tp")), n(cm.get("fn"))],
                                 ["lq", n(cm.get("fp")), n(cm.get("tn"))]]))
    facts = []
    if c.get("counts"):
        facts.append("labels: " + ", ".join(f"{k.replace('_', ' ')} {n(v)}" for k, v in c["counts"].items()))
    if c.get("labels"):
        facts.append("classes: " + ", ".join(f"{k} {n(v)}" for k, v in sorted(c["labels"].items())))
    if c.get("hyperparameters"):
        facts.append("hyperparameters: " + plain(c["hyperparameters"]))
    lab = c.get("labeler")
    if lab:
        facts.append(labeler_text(lab))
    for x in facts:
        sec.blocks.append(P(x[0].upper() + x[1:] + "."))


def labeler_text(lab: dict) -> str:
    """Who gave the labels, and what their scores measure."""
    scale = lab.get("scale") or {}
    on_scale = (f"the {lab['rubric']} rubric's {plain(scale.get('min'))} to {plain(scale.get('max'))} scale"
                if lab.get("rubric") and scale else "the rubric's scale")
    if lab.get("labeler") == "heuristic":
        sets = lab.get("rule_sets") or []
        return (f"labeler: heuristic (no model read the documents): a document's score is the share "
                f"of {len(sets) or 'the'} heuristic rule sets it passes"
                + (f" ({', '.join(sets)})" if sets else "")
                + f", mapped onto {on_scale}; hq means score ≥ {plain(lab.get('threshold'))}. "
                  f"It measures surface quality (length, repetition, punctuation, boilerplate), "
                  f"not the rubric's criteria")
    if lab.get("labeler") == "claude":
        return (f"labeler: Claude ({lab.get('model') or 'model not recorded'}), grading each "
                f"document against the {lab.get('rubric') or 'configured'} rubric on {on_scale}; "
                f"hq means score ≥ {plain(lab.get('threshold'))}")
    return (f"labeler: {lab.get('labeler')}" + (f" ({lab['model']})" if lab.get("model") else "")
            + (f", rubric {lab['rubric']}" if lab.get("rubric") else ""))


# ------------------------------------------------------------------ mixture

def _weights_text(w: dict) -> str:
    return ", ".join(f"{d} {v:.3f}" for d, v in w.items())


def _names(x: dict) -> str:
    return " = ".join(x.get("names") or [x.get("strategy") or x.get("baseline") or MISSING])


def mixture_lead(m: dict) -> str:
    """The sentence a reviewer acts on: the chosen mixture, its intervals against natural
    and uniform, and the fidelity result."""
    ch = m["chosen"]
    w = ch.get("weights") or {}
    parts = [f"Chosen: {_names(ch)} (" + ", ".join(f"{d} {w[d]:.3f}" for d in m["domains"] if d in w)
             + ")"]
    by = {}
    for c in m["against_baselines"]:
        for name in c.get("names") or [c["baseline"]]:
            by.setdefault(name, c)
    vs = [f"against {name}, {describe_interval(by[name])}" for name in ("natural", "uniform")
          if name in by and by[name]["verdict"] != "same"]
    parts.append("; ".join(vs) if vs else "no natural or uniform baseline to compare with")
    f = m.get("fidelity") or {}
    lead = parts[0] + "; " + parts[1] + "."
    if not f.get("ran"):
        return lead + " No fidelity check ran: the choice is untested beyond the search proxy."
    # a warning comes before the weights it qualifies
    return lead + " " + f["message"] if f.get("supported") else f["message"] + " " + lead


@_stage_section("mixture", "The mixture search")
def mixture_blocks(sec: Section, m: dict, r: dict) -> None:
    doms = m["domains"]
    ru = m["runs"]
    fid = m.get("fidelity") or {}
    sec.blocks.append(P(mixture_lead(m), warn=bool(fid.get("ran") and not fid.get("supported"))))
    sec.blocks.append(P(f"Target: {m['target']}, in bits per byte (lower is better). Proxy: "
                        f"{m['backend']} at {n(m['budget_tokens'])} tokens per run under "
                        f"{m['tokenizer']}. {n(ru['total'])} proxy runs ({n(ru['noise'])} noise, "
                        f"{n(ru['search'])} search, {n(ru['final'])} final); seed noise sd {f4(m['seed_noise_sd'])}."))
    ch = m["chosen"]
    sec.blocks.append(Sub("The chosen mixture"))
    test = ch.get("test") or {}
    sec.blocks.append(P(f"{_names(ch)} (round {ch['round']}, search run {ch['search_run']}), "
                        f"{ch.get('chosen_by') or 'chosen'}: validation target {f4(ch['validation_target'])}, "
                        f"test target {f4(test.get('target_bpb_mean'))} ± {f4(test.get('target_bpb_sd'))} "
                        f"over {test.get('seeds', MISSING)} seeds."))
    if ch.get("rationale"):
        sec.blocks.append(P(f"Rationale: {ch['rationale']}"))
    if ch.get("projection"):
        sec.blocks.append(P(f"Projection: {ch['projection']}", True))
    w = ch.get("weights") or {}
    sec.blocks.append(Table(["domain", "weight", "test bits per byte"],
                            [[d, f4(w.get(d)), f4((test.get("bpb_mean") or {}).get(d))] for d in doms]))
    if m["against_baselines"]:
        sec.blocks.append(_verdict_table(m["against_baselines"]))
        a = m["against_baselines"][0]
        sec.blocks.append(P(f"Paired over the same {a['seeds']} test seeds: the difference is the "
                            f"chosen mixture's target minus the baseline's, seed by seed (negative: "
                            f"the chosen is better); {_pct(a['level'])} interval by {a['method']}. A "
                            f"verdict is better or worse only when its interval excludes zero.", True))

    sec.blocks.append(Sub("Proxy fidelity: does a larger proxy agree?"))
    if not fid.get("ran"):
        sec.blocks.append(P(f"Not run: {fid.get('why', 'no fidelity result')}.", True))
    else:
        rho, tau = fid.get("spearman"), fid.get("kendall")
        sec.blocks.append(P(
            f"The finalists and further random mixtures, {len(fid['mixtures'])} in all, were run on the "
            f"{fid['split']} split with {fid['seeds']} seeds under the search proxy ({fid['search_proxy']}) "
            f"and a larger one ({fid['larger_proxy']}). Rank agreement of their mean targets: Spearman "
            f"{f4(rho) if rho is not None else MISSING}, Kendall {f4(tau) if tau is not None else MISSING} "
            f"(supported from Spearman {fid['min_rank_correlation']:g} with the same winner). The larger "
            f"proxy's best finalist: {' = '.join(fid['winner']['larger'])}."))
        pts = [(x["search_target_mean"], x["larger_target_mean"], " = ".join(x["names"]),
                x["kind"] == "finalist") for x in fid["mixtures"]]
        title = "Search proxy against the larger proxy, per mixture (test target, bits per byte)"
        sec.blocks.append(Plot(svg.scatter("fidelity", pts, title=title,
                                           xlabel=f"search proxy: {fid['search_proxy']}",
                                           ylabel="larger proxy"), title))
        sec.blocks.append(Table(["mixture", "kind", "search proxy target", "larger proxy target"],
                                [[" = ".join(x["names"]), x["kind"], f4(x["search_target_mean"]),
                                  f4(x["larger_target_mean"])] for x in fid["mixtures"]], text_cols=2))
        if fid["against_baselines"]:
            sec.blocks.append(P("The chosen mixture against the baselines on the larger proxy:"))
            sec.blocks.append(_verdict_table(fid["against_baselines"]))

    sec.blocks.append(Sub("Every candidate's weights"))
    cands = m["candidates"]
    if cands:
        labels = [f"run {c['run']} {c['strategy']} r{c['round']}" for c in cands]
        title = "Candidate mixtures (search runs, validation split)"
        sec.blocks.append(Plot(svg.stacked_hbar("candidate-weights", labels, doms,
                                                [[c["weights"][d] for d in doms] for c in cands],
                                                title=title, xlabel="weight"), title))
        sec.blocks.append(Table(["run", "strategy", "round"] + doms + ["valid target"],
                                [[str(c["run"]), c["strategy"], str(c["round"])]
                                 + [f"{c['weights'][d]:.3f}" for d in doms] + [f4(c["valid_target"])]
                                 for c in cands], text_cols=2))
    else:
        sec.blocks.append(P(f"Not available: {m.get('candidates_why', 'no search runs')}.", True))

    sec.blocks.append(Sub("Best-so-far target per strategy"))
    bsf = m["best_so_far"]
    if bsf:
        title = "Best validation target so far against the proxy runs each strategy used"
        series = {s: [(i + 1, y) for i, y in enumerate(v)] for s, v in bsf.items()}
        sec.blocks.append(Plot(svg.line_chart("best-so-far", series, title=title,
                                              xlabel="proxy runs used by the strategy",
                                              ylabel="target (bits per byte)"), title))
        sec.blocks.append(Table(["strategy", "runs", "best target"],
                                [[s, str(len(v)), f4(min(v)) if v else MISSING] for s, v in bsf.items()]))
    else:
        sec.blocks.append(P("Not available: the summary has no best-so-far curves.", True))

    sec.blocks.append(Sub("Per-domain test loss: the chosen mixture against the baselines"))
    fin = m["finalists"]
    if fin:
        title = "Test bits per byte per domain (mean ± sd over seeds)"
        series = [(("chosen: " if f["chosen"] else "") + _names(f), [f["bpb_mean"][d] for d in doms],
                   [f["bpb_sd"][d] for d in doms], f["chosen"]) for f in fin]
        sec.blocks.append(Plot(svg.dot_errorbars("test-loss", doms, series, title=title,
                                                 ylabel="bits per byte"), title))
        # finalists as columns: a row per domain keeps the table as narrow as the finalists are few
        kind = ["chosen" if f["chosen"] else "baseline" if f["baseline"] else "candidate" for f in fin]
        sec.blocks.append(Table(["bits per byte (mean ± sd)"]
                                + [f"{_names(f)} ({k}, {f['seeds']} seeds)" for f, k in zip(fin, kind)],
                                [["target"] + [f"{f['target_mean']:.4f} ± {f['target_sd']:.4f}" for f in fin]]
                                + [[d] + [f"{f['bpb_mean'][d]:.4f} ± {f['bpb_sd'][d]:.4f}" for f in fin]
                                   for d in doms]))
    else:
        sec.blocks.append(P("Not available: candidates.csv has no final (test) runs.", True))

    sec.blocks.append(Sub("Claude's proposals"))
    cl = m["claude"]
    if cl["status"] != "ran":
        sec.blocks.append(P(f"Claude did not propose: {cl['why']}", True))
    elif not cl["rationales"]:
        sec.blocks.append(P(f"Claude ({cl['model']}) made no proposals ({cl['calls']} calls, "
                            f"{cl['failed']} failed).", True))
    else:
        sec.blocks.append(Table(["round", "weights", "rationale"],
                                [[str(x["round"]), _weights_text(x["weights"]), x["rationale"]]
                                 for x in cl["rationales"]], text_cols=99))


def _pct(level) -> str:
    return f"{100 * level:g}%" if isinstance(level, (int, float)) else MISSING


def _verdict_table(rows: list[dict]) -> Table:
    out = []
    for a in rows:
        lo, hi = a["interval"]
        out.append([_names(a), f4(a["baseline_test_target"]), f4(a["chosen_test_target"]),
                    f"{a['difference']:+.4f}", f"{lo:+.4f} to {hi:+.4f}", a["verdict"]])
    return Table(["baseline", "baseline target", "chosen target", "difference",
                  f"{_pct(rows[0]['level'])} interval", "verdict"], out)


@_stage_section("export", "The export")
def export_blocks(sec: Section, e: dict, r: dict) -> None:
    sec.blocks.append(P(f"{n(e['tokens_achieved'])} of {n(e['tokens_asked'])} tokens asked, under "
                        f"{e['tokenizer']} (seed {e['seed']})."))
    sec.blocks.append(Table(["domain", "weight", "tokens asked", "tokens written", "documents", "epochs"],
                            [[d, f4(v["weight"]), n(v["tokens_asked"]), n(v["tokens_achieved"]),
                              n(v["documents"]), f"{v['epochs']:.2f}" if v["epochs"] is not None else MISSING]
                             for d, v in e["domains"].items()]))


def cost_blocks(r: dict) -> Section:
    c = r["cost"]
    sec = Section("cost", "Cost")
    pr = c.get("proxy_runs")
    proxy = None if not pr else P(
        f"Proxy training runs (compute on this machine, no API charge; their seconds are under "
        f"Time per stage): {n(pr['search_runs'])} for the mixture search"
        + (f" and {n(pr['fidelity_runs'])} for the fidelity check, on both proxies (the larger: "
           f"{pr['larger_proxy']})" if pr.get("fidelity_runs") else "") + ".")
    if not c["rows"]:
        sec.blocks.append(P(f"Not available: {c['why_empty']}.", True))
        if proxy:
            sec.blocks.append(proxy)
        return sec
    sec.blocks.append(Table(["stage", "what", "input tokens", "output tokens", "US dollars", "from"],
                            [[x["stage"], x["what"], n(x.get("input_tokens")), n(x.get("output_tokens")),
                              f"{x.get('usd') or 0:.4f}", x["source"]] for x in c["rows"]]
                            + [["total", "", "", "", f"{c['total_usd']:.4f}", ""]], text_cols=2))
    if proxy:
        sec.blocks.append(proxy)
    return sec


def timings_blocks(r: dict) -> Section:
    t = r["timings"]
    sec = Section("timings", "Time per stage")
    sec.blocks.append(P("Everything in this section changes from one run to the next; the rest "
                        "of the report does not.", True))
    def mib(v):
        return MISSING if v is None else f"{v:,.0f}"

    rows = [[name, v["run_status"] or "", v["source"] or "not recorded", v["finished_at"] or "",
             seconds(v["seconds"]), seconds(v.get("cpu_s")), mib(v.get("peak_pss_mib"))]
            for name, v in t["stages"].items()]
    rows.append(["total (known)", t["run_status"] or "", "", "", seconds(t["total_seconds"]), "", ""])
    sec.blocks.append(Table(["stage", "run.json status", "from", "finished at", "seconds", "CPU seconds",
                             "peak memory (MiB)"], rows, text_cols=4))
    if any(v.get("peak_pss_mib") is not None for v in t["stages"].values()):
        sec.blocks.append(P("Peak memory is the proportional set size (PSS) of the whole process "
                            "tree while the stage ran, Beam's worker processes included, sampled "
                            "every 0.25 s by `curate run`; CPU seconds are summed over that tree."))
    mix = t["stages"].get("mix", {})
    computed = mix.get("proxy_runs_computed")
    if computed is not None:
        fid = mix.get("fidelity_runs_computed")
        sec.blocks.append(P(f"Proxy runs computed by this run: {n(computed)} for the search"
                            + (f", {n(fid)} for the fidelity check ({seconds(mix.get('fidelity_seconds'))} s)"
                               if fid else "")
                            + " (the others came from the cache, mix/proxy_cache.jsonl)."))
    return sec


def headline(r: dict) -> str:
    """One line for the top of the report: documents and tokens in and kept, and the
    chosen mixture (and the classifier warning, when there is one)."""
    f, m = r["funnel"], r["mixture"]
    parts = []
    if f["domains"]:
        docs, toks = f["total"]["documents"], f["total"]["tokens"]

        def amount(k):
            t = toks.get(k)
            return f"{n(docs[k])} documents" + (f" ({n(t)} tokens)" if t is not None else "")

        share = [pct(docs["kept"] / docs["input"]) + " of documents"] if docs["input"] else []
        if toks.get("input") and toks.get("kept") is not None:
            share.append(pct(toks["kept"] / toks["input"]) + " of tokens")
        parts.append(f"In: {amount('input')}. Kept: {amount('kept')}"
                     + (f", {' and '.join(share)}" if share else "") + ".")
    else:
        parts.append("No document stage (dedup, filter, score) ran.")
    if m.get("ran"):
        ch = m["chosen"]
        w = ch.get("weights") or {}
        parts.append(f"Chosen mixture, {ch['strategy']}: "
                     + ", ".join(f"{d} {w[d]:.3f}" for d in m["domains"] if d in w) + ".")
        fid = m.get("fidelity") or {}
        if fid.get("ran") and not fid.get("supported"):
            parts.append("Not yet supported by the larger proxy (see the mixture section).")
    else:
        parts.append(f"No mixture was chosen: {m.get('why') or 'the mix stage did not run'}.")
    warning = poor_agreement(r, short=True)
    if warning:
        parts.append(warning)
    return " ".join(parts)


def build_sections(r: dict) -> list[Section]:
    r = {**r, "stages_by_name": {s["name"]: s for s in r["stages"]["stages"]}}
    return [stages_blocks(r), funnel_blocks(r), *([crawl_blocks(r)] if r.get("crawl") else []),
            clusters_blocks(r), filters_blocks(r), scores_blocks(r),
            classifier_blocks(r), mixture_blocks(r), export_blocks(r), cost_blocks(r), timings_blocks(r)]
