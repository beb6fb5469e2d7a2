"""What `curate mix` writes: every proxy run, the chosen mixture with its evidence, and
the chosen mixture in the forms training code reads.

- ``candidates.csv``: one row per proxy run (noise, search and final): run, phase,
  strategy, round, split, seed, mixture key, a weight and a bits-per-byte column
  per domain, the target, whether it came from the cache;
- ``ratios.csv`` and ``metrics.csv``: the same runs in the two-table layout of
  Olmix's swarm outputs: one row per run with its domain ratios, and one row per run
  with its metrics (target and per-domain bits per byte and loss), joined on ``run``;
- ``mixture.yaml``: the chosen weights with their provenance (strategy, round,
  rationale, raw proposal and projection), the test-split result against every
  baseline (the paired difference, its 95% interval and the verdict), the proxy
  fidelity check when it ran, and the search's settings;
- ``fidelity.csv``: every run of the fidelity check, one row per (mixture, proxy,
  seed), with its target and per-domain bits per byte;
- ``megatron_data_path.txt``: Megatron-LM's ``--data-path`` list (weight, then path
  prefix, per domain) for the shards ``curate export`` writes;
- ``olmo_source_mixture.yaml``: an OLMo-core style source mixture (``source_configs``
  with ``target_ratio`` and ``max_repetition_ratio`` per source).

Every file is written to a temporary name and renamed.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

import yaml

from curation.fs import write_atomic
from curation.mixture.paired import describe_interval
from curation.mixture.search import SearchResult
from curation.mixture.types import mixture_key


def _atomic(path: Path, text: str) -> None:
    write_atomic(str(path), text.encode("utf-8"))


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()


def _f(x: float) -> str:
    return f"{x:.6f}"


def write_tables(out: Path, res: SearchResult, domains: list[str]) -> None:
    head = ["run", "phase", "strategy", "round", "split", "seed", "mixture"] + \
        [f"w_{d}" for d in domains] + ["target_bpb"] + [f"bpb_{d}" for d in domains]
    rows: list[list[Any]] = [head]
    ratios: list[list[Any]] = [["run", "name", "strategy", "round"] + domains]
    metrics: list[list[Any]] = [["run", "split", "seed", "target_bpb"]
                                + [f"bpb_{d}" for d in domains] + [f"loss_{d}" for d in domains]]
    for t in res.trials:
        r = t.result
        rows.append([t.run, t.phase, t.strategy, t.round, t.split, t.seed, mixture_key(t.weights)]
                    + [_f(t.weights.get(d, 0.0)) for d in domains] + [_f(r.target)]
                    + [_f(r.bpb[d]) for d in domains])
        ratios.append([t.run, f"{t.strategy}-r{t.round}-{t.run}", t.strategy, t.round]
                      + [_f(t.weights.get(d, 0.0)) for d in domains])
        metrics.append([t.run, t.split, t.seed, _f(r.target)] + [_f(r.bpb[d]) for d in domains]
                       + [_f(r.loss[d]) for d in domains])
    _atomic(out / "candidates.csv", _csv(rows))
    _atomic(out / "ratios.csv", _csv(ratios))
    _atomic(out / "metrics.csv", _csv(metrics))


def write_fidelity(out: Path, fid: Mapping[str, Any], domains: list[str]) -> None:
    rows: list[list[Any]] = [["mixture", "names", "kind", "proxy", "split", "seed", "target_bpb"]
                             + [f"bpb_{d}" for d in domains]]
    for r in fid["runs"]:
        rows.append([r["mixture"], " = ".join(r["names"]), r["kind"], r["proxy"], r["split"],
                     r["seed"], _f(r["target"])] + [_f(r["bpb"][d]) for d in domains])
    _atomic(out / "fidelity.csv", _csv(rows))


def fidelity_document(fid: Mapping[str, Any]) -> dict:
    """What mixture.yaml keeps of the fidelity check (fidelity.csv has every run)."""
    return {
        "supported": fid["supported"], "message": fid["message"],
        "search_proxy": fid["search_proxy"], "larger_proxy": fid["larger_proxy"],
        "split": fid["split"], "seeds": len(fid["seeds"]), "mixtures": len(fid["mixtures"]),
        "spearman": fid["spearman"], "kendall": fid["kendall"],
        "min_rank_correlation": fid["min_rank_correlation"],
        "winner": {"search": fid["winner"]["search"], "larger": fid["winner"]["larger"],
                   "same": fid["winner"]["same"]},
        "against_baselines": [_verdict(c) for c in fid["against_baselines"]],
    }


def _verdict(c: Mapping[str, Any]) -> dict:
    return {"baseline": c["baseline"], "names": c["names"], "verdict": c["verdict"],
            "difference": c["difference"], "interval": c["interval"], "level": c["level"],
            "method": c["method"], "seeds": c["seeds"],
            "baseline_test_target": c["baseline_test_target"],
            "chosen_test_target": c["chosen_test_target"]}


def mixture_document(res: SearchResult, settings: Mapping[str, Any],
                     fidelity: Mapping[str, Any] | None = None) -> dict:
    c = res.chosen
    proposal = next((t.proposal for t in res.trials if t.run == c["search_run"]), None)
    return {
        "weights": {d: round(w, 6) for d, w in sorted(c["weights"].items())},
        "provenance": {
            "strategy": c["strategy"], "round": c["round"], "search_run": c["search_run"],
            "rationale": c["rationale"],
            "proposed_weights": ({d: round(w, 6) for d, w in sorted(proposal.raw_weights.items())}
                                 if proposal is not None and proposal.raw_weights else None),
            "projection": proposal.projection if proposal is not None else None,
            "chosen_by": "lowest validation target among the finalists",
        },
        "validation_target_bpb": c["valid_target"],
        "names": c["names"],
        "test": {"target_bpb_mean": c["test_target_mean"], "target_bpb_sd": c["test_target_sd"],
                 "seeds": len(c["test_targets"]), "bpb_mean": c["test_bpb_mean"]},
        "seed_noise_sd": res.noise_sd,
        "against_baselines": [{**_verdict(c), "differences": c["differences"]}
                              for c in res.comparisons],
        "fidelity": None if fidelity is None else fidelity_document(fidelity),
        "skipped_proposers": res.skipped,
        "settings": dict(settings),
    }


def write_mixture(out: Path, res: SearchResult, settings: Mapping[str, Any],
                  export_prefix: str = "export", fidelity: Mapping[str, Any] | None = None) -> dict:
    doc = mixture_document(res, settings, fidelity)
    _atomic(out / "mixture.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    weights = doc["weights"]
    # Megatron: "W1 PREFIX1 W2 PREFIX2 ..." once the exported shards are preprocessed
    _atomic(out / "megatron_data_path.txt",
            " ".join(f"{w} {export_prefix}/{d}/{d}_text_document" for d, w in weights.items()) + "\n")
    caps = settings.get("constraints", {})
    olmo = {
        "source_mixture": {
            "max_tokens": settings.get("budget_tokens"),
            "seed": settings.get("seed", 0),
            "source_configs": [
                {"source_name": d, "target_ratio": w,
                 "paths": [f"{export_prefix}/{d}/*.npy"],
                 "max_repetition_ratio": caps.get("max_epochs")}
                for d, w in weights.items()],
        }
    }
    _atomic(out / "olmo_source_mixture.yaml", yaml.safe_dump(olmo, sort_keys=False))
    return doc


def mix_verdict_lines(s: dict) -> list[str]:
    """The end of `curate mix` (and of `curate run`): the fidelity result first, then the
    chosen weights and their paired verdicts against the baselines."""
    fid = s.get("fidelity")
    lines = [fid["message"]] if fid else ["no fidelity check (fidelity.enabled is false): "
                                          "the choice is untested beyond the search proxy"]
    weights = ", ".join(f"{d} {w:.3f}" for d, w in sorted(s["chosen"].items()))
    names = " = ".join(s.get("chosen_names") or [s["chosen_strategy"]])
    lines.append(f"chose {names}: {weights}; test target "
                 f"{s['test']['target_bpb_mean']:.4f} bits per byte over {s['test']['seeds']} seeds")
    for c in s["against_baselines"]:
        if c["verdict"] == "same":
            continue
        lines.append(f"  against {' = '.join(c['names'])}: {describe_interval(c)}")
    return lines
