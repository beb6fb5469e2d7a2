"""The `curate` command line. Flags we do not know go to Beam's PipelineOptions,
so `--runner DataflowRunner --project ... --region ... --temp_location gs://...`
passes through unchanged."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import types
import typing

from curation.config import (ClassifierConfig, ConfigError, DedupConfig, ExportConfig, FilterRunConfig,
                             LabelConfig, ScoreRunConfig, load_config)
from curation.manifest import BalanceError
from pipelines import verify_cmd
from pipelines.errors import ClusterError, StageOutcomeError, UsageError

DESCRIPTION = "curate: deduplicate, filter and mix pre-training corpora on Apache Beam."

DEDUP_EPILOG = """\
Any other --flag is passed to Beam's PipelineOptions, e.g.
  --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
  --direct_num_workers 4   (local runner; default: every core)
  --runner dask --dask_client_address tcp://HOST:8786   (a Dask cluster whose workers
    see the same paths; without the address a local one; needs curation[dask]; see
    docs/dask.md)
Without --runner the job runs on Beam's local FnApiRunner with no network.
DataflowRunner jobs have been checked offline only (built with --dry_run=True; gs://
through a local stand-in), not yet run on Dataflow: see docs/dataflow.md.
"""


def _setting_flags(group, model, *names: str, help: dict | None = None, choices: dict | None = None):
    """Flags for the settings `names` of a pydantic model, in that order: the flag is the
    field's name (or its ``cli.flag``), the type, choices, repetition and help come from
    the field, and the default is None so that a config file or the model decides."""
    for name in names:
        f = model.model_fields[name]
        cli = (f.json_schema_extra or {}).get("cli", {})
        kw = {"dest": name, "help": (help or {}).get(name, f.description)}
        kw.update({k: cli[k] for k in ("metavar", "required") if k in cli})
        ann = f.annotation
        if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union:
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        if ann is bool:
            kw.update(action="store_true", default=None)
        elif typing.get_origin(ann) is list:
            kw.update(action="append")
        elif typing.get_origin(ann) is typing.Literal:
            kw["choices"] = list(typing.get_args(ann))
        elif typing.get_origin(ann) is dict:
            pass            # the flag's text is parsed by the command (a file, VALUE=SCORE,...)
        elif ann is not str:
            kw["type"] = ann
        if choices and name in choices:
            kw["choices"] = choices[name]
        group.add_argument(cli.get("flag", "--" + name.replace("_", "-")), **kw)


def _input_output_args(p, model, *, config_help: str | None, strict_help: str | None = None):
    io = p.add_argument_group("input and output")
    _setting_flags(io, model, "inputs")
    io.add_argument("--demo", action="store_true",
                    help="use the demo corpus that ships inside the package as input")
    _setting_flags(io, model, "output")
    if config_help:
        io.add_argument("--config", help=config_help)
    _setting_flags(io, model, "output_format", "input_format", "text_field", "id_field", "domain",
                   "max_doc_bytes", "strict", help={"strict": strict_help} if strict_help else None)
    io.add_argument("--overwrite", action="store_true",
                    help="rerun even when OUTPUT already holds a complete run with the same settings")
    _allow_damaged_arg(io)
    return io


def _allow_damaged_arg(p):
    p.add_argument("--allow-damaged", action="store_true",
                   help="accept input files that are damaged (truncated, corrupt): their readable "
                        "records are processed either way and the loss is in rejected/; without "
                        "this flag such a run exits 1")


def _dedup_parser(sub):
    p = sub.add_parser(
        "dedup", help="remove exact and near-duplicate documents",
        description="Remove exact duplicates (same normalised text) and near duplicates "
                    "(MinHash LSH, Jaccard of word n-grams) from a corpus.",
        epilog=DEDUP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _input_output_args(p, DedupConfig, config_help="YAML file with these settings; flags override it")
    mh = p.add_argument_group("near duplicates")
    _setting_flags(mh, DedupConfig, "threshold", "num_perm", "ngram", "char_ngrams", "seed", "backend",
                   "family", "bands", "rows", "verify", "verify_tolerance", "kept_tolerance", "keep",
                   "max_cluster_size", "on_large_cluster")
    ix = p.add_argument_group("dedup indexes")
    _setting_flags(ix, DedupConfig, "against", "write_index")
    _setting_flags(mh, DedupConfig, "cc_max_rounds", "lsh_partitions", "batch_size", "split_bytes")
    return p


FILTER_EPILOG = """\
OUTPUT then holds documents/ (kept, with edited text where a line-level rule
changed it), removed/ (each removed document with its reason and signals),
rejected/ (malformed records and filter errors) and manifest.json.

""" + DEDUP_EPILOG


def _filter_parser(sub):
    from curation.filters import PRESETS
    p = sub.add_parser(
        "filter", help="remove documents by heuristic rules (Gopher, C4, FineWeb, language id)",
        description="Check every document with a chain of heuristic filters; keep it, or remove "
                    "it with the reason (\"<filter>:<rule>\") and the measured signals.",
        epilog=FILTER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _input_output_args(p, FilterRunConfig, config_help=None,
                       strict_help="stop at the first bad record or filter error, naming file "
                                   "and line, instead of rejecting it")
    fl = p.add_argument_group("filters")
    which = fl.add_mutually_exclusive_group()
    _setting_flags(which, FilterRunConfig, "preset", "filters_config", choices={"preset": list(PRESETS)})
    _setting_flags(fl, FilterRunConfig, "removed_sample", "split_bytes")
    return p


LABEL_EPILOG = """\
OUTPUT then holds labels.jsonl (one line per sampled document: id, domain, text,
score, label hq/lq, reasoning, model, rubric, labeler, tokens and cost, or error),
summary.json (counts, failures by reason, tokens, cost) and, for Claude,
labels.sqlite: the label store that makes a rerun pay only for what is missing.

Claude needs ANTHROPIC_API_KEY in the environment (ANTHROPIC_BASE_URL is honoured).
Without it, use --labeler heuristic or --labels-from-field FIELD.
"""


def _label_parser(sub):
    p = sub.add_parser(
        "label", help="sample seed documents and grade them (Claude, heuristic, or imported)",
        description="Draw a deterministic sample stratified by domain (exact duplicates "
                    "skipped) and label it against a rubric: with Claude, with heuristic "
                    "rules, or from a field the corpus already carries.",
        epilog=LABEL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    _setting_flags(io, LabelConfig, "inputs")
    io.add_argument("--demo", action="store_true", help="label the demo corpus that ships in the package")
    _setting_flags(io, LabelConfig, "output", "input_format", "text_field", "id_field", "domain",
                   "max_doc_bytes", "strict")
    _setting_flags(p.add_argument_group("sample"), LabelConfig, "sample", "seed", "allocation")
    lb = p.add_argument_group("labeler")
    _setting_flags(lb, LabelConfig, "rubric")
    _setting_flags(lb.add_mutually_exclusive_group(), LabelConfig, "labeler", "labels_field",
                   choices={"labeler": ["claude", "heuristic"]})   # field: by --labels-from-field
    _setting_flags(lb, LabelConfig, "label_map", "threshold")
    _setting_flags(p.add_argument_group("Claude"), LabelConfig, "model", "mode", "max_usd",
                   "max_doc_chars", "concurrency", "batch_poll_s", "prices", "store")
    return p


def _train_parser(sub):
    p = sub.add_parser(
        "train-classifier", help="train a fastText quality classifier on labels.jsonl",
        description="Train a fastText classifier (word bigrams) on graded labels: hq when "
                    "score >= threshold. Hyperparameters are chosen by F1 on a validation "
                    "split unless fixed; metrics are measured on a held-out split.",
        epilog="MODEL_DIR then holds model.bin (model.ftz with --quantize), metrics.json and "
               "MODEL_CARD.md.")
    p.add_argument("--labels", required=True, help="labels.jsonl from curate label")
    p.add_argument("--output", required=True, metavar="MODEL_DIR", help="model directory")
    p.add_argument("--threshold", type=float,
                   help="score at which a label is hq (default: the one in summary.json beside the labels)")
    _setting_flags(p, ClassifierConfig, *ClassifierConfig.model_fields)
    return p


SCORE_EPILOG = """\
OUTPUT then holds documents/ (kept, each with a quality_score column), removed/
(below the cut, with their scores), rejected/ (malformed records, and documents
the model failed on: score_error) and manifest.json (counts, the cut asked and
achieved, score summaries per domain).

""" + DEDUP_EPILOG


def _score_parser(sub):
    p = sub.add_parser(
        "score", help="score every document with a fastText quality model, keep the best",
        description="Add quality_score = P(high quality) from a model written by "
                    "train-classifier to every document; keep those above --min-score, or "
                    "the top fraction of the whole corpus (--keep-top), or all.",
        epilog=SCORE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _input_output_args(p, ScoreRunConfig, config_help=None)
    sc = p.add_argument_group("scoring")
    _setting_flags(sc, ScoreRunConfig, "model")
    which = sc.add_mutually_exclusive_group()
    _setting_flags(which, ScoreRunConfig, "min_score", "keep_top")
    _setting_flags(sc, ScoreRunConfig, "keep_top_by", "batch_size", "split_bytes")
    return p


def _mix_parser(sub):
    p = sub.add_parser(
        "mix", help="search domain mixtures: proposers (baselines, RegMix, Claude) x proxy runs",
        description="Propose domain mixtures with the configured strategies under equal "
                    "budgets of proxy training runs, judge the best on a held-out test split "
                    "with fresh seeds, and write the chosen mixture with its evidence.",
        epilog="OUTPUT then holds candidates.csv (every proxy run), ratios.csv and metrics.csv, "
               "fidelity.csv (the finalists and random mixtures rerun on the larger proxy of "
               "the config's fidelity section), mixture.yaml (the chosen mixture, its provenance, "
               "its paired 95% intervals and verdicts against every baseline, and the fidelity "
               "result), megatron_data_path.txt, olmo_source_mixture.yaml, "
               "statistics.json, tokenizer.json, proxy_cache.jsonl and summary.json. The end "
               "of the output says whether the larger proxy supports the choice, then the "
               "chosen weights. The "
               "Claude proposer needs ANTHROPIC_API_KEY; without it, it is skipped and the "
               "summary says so.")
    p.add_argument("--config", required=True, help="mix YAML (see configs/mix/demo.yaml)")
    p.add_argument("--output", help="output directory (overrides output: in the config)")
    p.add_argument("--demo", action="store_true",
                   help="search on the demo corpus that ships in the package")
    return p


def _fs_for(paths) -> object | None:
    """Beam's filesystems when a path is remote (gs://...); else None: the local disk."""
    if any("://" in str(p) for p in paths):
        from pipelines.fs import BeamFS
        return BeamFS()
    return None


def _run_mix(args) -> int:
    from pydantic import ValidationError

    from curation.config import _format_error, read_yaml_mapping
    from curation.mixture.config import MixConfig
    from curation.mixture.run import run_mix
    data = read_yaml_mapping(args.config, "mix config")
    if args.output:
        data["output"] = args.output
    if args.demo:
        data.update({"demo": True, "sources": None, "inputs": []})
    try:
        cfg = MixConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, args.config)) from None
    paths = list(cfg.inputs) + [p for v in (cfg.sources or {}).values()
                                for p in ([v] if isinstance(v, str) else v)]
    s = run_mix(cfg, log=lambda m: print(m, file=sys.stderr), fs=_fs_for(paths))
    from curation.mixture.outputs import mix_verdict_lines
    for line in mix_verdict_lines(s):
        print(f"mix: {line}", file=sys.stderr)
    print(f"mix: {s['proxy_runs']} proxy runs ({s['proxy_runs_computed']} computed)"
          + (f", {s['fidelity_runs']} for the fidelity check ({s['fidelity_runs_computed']} computed)"
             if s.get("fidelity") else "") + f" -> {cfg.output}", file=sys.stderr)
    return 0


def _export_parser(sub):
    p = sub.add_parser(
        "export", help="sample the chosen mixture to N tokens and write shards or token files",
        description="Sample each domain's documents to its share of --tokens (whole passes "
                    "in a fresh seeded order each, within the mix run's repetition cap; a "
                    "clear error if that is infeasible; the total within one document of N) "
                    "and write them per domain: text shards, or token files a trainer reads.",
        epilog="OUTPUT then holds, per domain, <domain>/part-NNNNN.jsonl.gz (id, domain, text, "
               "epoch) with --format jsonl; <domain>/<domain>_text_document.bin/.idx and "
               "megatron_data_path.txt (the --data-path line, also printed) with --format "
               "megatron; <domain>/part-00000.npy and olmo_source_mixture.yaml with --format "
               "olmo; and manifest.json (tokens asked and achieved per domain). See "
               "docs/mixture.md.")
    p.add_argument("--mixture", required=True, help="mixture.yaml written by curate mix")
    p.add_argument("--output", required=True, help="output directory")
    _setting_flags(p, ExportConfig, *ExportConfig.model_fields)
    return p


def _run_export(args) -> int:
    from curation.mixture.export import data_paths, export_mixture
    e = load_config(ExportConfig, None, _settings_from_flags(args, ExportConfig))
    m = export_mixture(args.mixture, args.output, e.tokens, seed=e.seed or 0,
                       fs=_fs_for(data_paths(args.mixture)), shard_docs=e.shard_docs, fmt=e.format,
                       tokenizer=e.tokenizer, eod_id=e.eod_id, log=lambda s: print(s, file=sys.stderr))
    print(f"export: {m['tokens_achieved']:,} of {m['tokens_asked']:,} tokens in "
          f"{len(m['domains'])} domains -> {args.output}", file=sys.stderr)
    if m.get("data_path"):
        print(f"export: Megatron-LM --data-path (also in {os.path.join(args.output, m['data_path_file'])}):",
              file=sys.stderr)
        print(m["data_path"])
    if m.get("olmo_source_mixture"):
        print(f"export: OLMo-core source mixture: {os.path.join(args.output, m['olmo_source_mixture'])} "
              f"(dtype {m['dtype']}, eos_token_id {m['eod_id']}, vocab_size {m['vocab_size']})",
              file=sys.stderr)
    return 0


def _run_label(parser, args) -> int:
    import anthropic

    from classifiers.claude import Interrupted, NoApiKey, redact
    from classifiers.labeling import NothingLabelled, parse_label_map, run_label
    from curation.demo import demo_glob
    overrides = _settings_from_flags(args, LabelConfig)
    if args.demo:
        overrides["inputs"] = [demo_glob()] + list(args.inputs or [])
    overrides["labeler"] = "field" if args.labels_field else args.labeler
    overrides["label_map"] = parse_label_map(args.label_map)
    if args.prices:
        from curation.config import read_yaml_mapping
        overrides["prices"] = read_yaml_mapping(args.prices, "prices file")
    if args.labels_field and args.threshold is None:
        parser.error("--labels-from-field needs --threshold (the score at which a label is hq)")
    cfg = load_config(LabelConfig, None, overrides)
    if not cfg.patterns():
        parser.error("label needs --input (or --demo)")
    if not cfg.output:
        parser.error("label needs --output")
    from pipelines.stopping import stop_on_signals
    try:
        with stop_on_signals("label") as stop:
            s = run_label(cfg, log=lambda m: print(m, file=sys.stderr), stop=stop,
                          fs=_fs_for(cfg.patterns()))
    except NoApiKey as e:
        print(f"curate: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"label: interrupted ({e}); labels so far are in the store: rerun the same "
              f"command to finish", file=sys.stderr)
        return 130
    except NothingLabelled as e:
        print(f"curate: label: {e}", file=sys.stderr)
        return 5
    except anthropic.APIError as e:   # e.g. a batch poll refused; the API may echo the key
        print(f"curate: label: {type(e).__name__}: {redact(e)}; labels so far are in the "
              f"store: rerun the same command to finish", file=sys.stderr)
        return 1
    c = s["counts"]
    print(f"label: {c['sampled']} sampled, {c['labelled']} labelled ({c['hq']} hq, {c['lq']} lq), "
          f"{c['failed']} failed, ${s['cost_usd']:.4f} -> {cfg.output}", file=sys.stderr)
    return 4 if s.get("budget_stop") else 0


def _run_train(args) -> int:
    import json
    from pathlib import Path

    from classifiers.fasttext_train import train_classifier
    from classifiers.labeling import SUMMARY_FILE
    labels_path = Path(args.labels)
    if not labels_path.is_file():
        raise ConfigError(f"labels file not found: {labels_path}")
    threshold = args.threshold
    summary = labels_path.with_name(SUMMARY_FILE)
    if threshold is None:
        if not summary.is_file():
            raise ConfigError(f"give --threshold: there is no {SUMMARY_FILE} beside {labels_path}")
        threshold = json.loads(summary.read_text(encoding="utf-8"))["threshold"]
    rows = []
    with labels_path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{labels_path}:{n}: not JSON ({e.msg})") from None
    params = load_config(ClassifierConfig, None, _settings_from_flags(args, ClassifierConfig)).model_dump()
    params["seed"] = params["seed"] or 0
    try:
        res = train_classifier(
            rows, args.output, threshold=threshold, **params,
            data_description=f"Labels from {labels_path} (threshold {threshold}).")
    except ValueError as e:
        raise ConfigError(f"{labels_path}: {e}") from None
    h, hp = res.metrics["held_out"], res.metrics["hyperparameters"]
    print(f"train-classifier: held-out F1 {h['f1']:.4f}, precision {h['precision']:.4f}, "
          f"recall {h['recall']:.4f}, ROC AUC {h['roc_auc'] if h['roc_auc'] is None else round(h['roc_auc'], 4)} "
          f"(epoch {hp['epoch']}, lr {hp['lr']}) -> {res.model_path}", file=sys.stderr)
    return 0


def _run_stage(parser, args, beam_args, config_cls, run, summary, *, has_config: bool) -> int:
    """Config from flags (and --config), inputs and output checked, the stage run, one
    line of counts on stderr."""
    from curation.demo import demo_glob
    overrides = _settings_from_flags(args, config_cls)
    if args.demo:
        overrides["inputs"] = [demo_glob()] + list(args.inputs or [])
    cfg = load_config(config_cls, args.config if has_config else None, overrides)
    if not cfg.patterns():
        parser.error(f"{args.command} needs --input (or --demo"
                     + (", or inputs: in --config)" if has_config else ")"))
    if not cfg.output:
        parser.error(f"{args.command} needs --output" + (" (or output: in --config)" if has_config else ""))
    manifest = run(cfg, beam_args, overwrite=args.overwrite)
    if manifest["status"] == "dry_run":
        print(f"{args.command}: dry run on {manifest['runner']}: job built, nothing submitted",
              file=sys.stderr)
        return 0
    print(f"{args.command}: {summary(manifest['counts'])} -> {cfg.output}", file=sys.stderr)
    from pipelines.fs import BeamFS
    from pipelines.outcome import check_stage_outcome
    check_stage_outcome(args.command, manifest, BeamFS(), cfg.output, text_field=cfg.text_field,
                        allow_damaged=args.allow_damaged, warn=lambda m: print(m, file=sys.stderr))
    return 0


RUN_EPILOG = """\
RUN_DIR (output: in the config, or --output) then holds one directory per stage,
each exactly what the stage's own command writes (dedup/, filter/, label/,
classifier/, score/, mix/, export/), run.json (each stage's status, fingerprint,
time, cost and fallback) and report.html, report.md and report.json.

A rerun skips every stage that completed with the same settings and inputs and
redoes the rest; a stage cut off halfway is cleared and redone. Other --flags go
to Beam's PipelineOptions for the dedup, filter and score stages (default: the
local runner; e.g. --direct_num_workers 2). For Dataflow (--runner DataflowRunner
--project P --region R --temp_location gs://B/tmp; checked offline only, see
docs/dataflow.md), give --data-output gs://B/run
and gs:// sources; the other stages run here. On a Dask cluster (--runner dask
[--dask_client_address tcp://HOST:8786], docs/dask.md) local paths do, when every
worker sees them at the same path. Without ANTHROPIC_API_KEY, labelling
falls back to the heuristic labeler and the Claude proposer is skipped: the run
says so.
"""


def _progress_arg(p):
    p.add_argument("--progress", choices=["auto", "bars", "lines"], default="auto",
                   help="progress bars (default on a terminal) or plain log lines")


def _run_parser(sub):
    p = sub.add_parser(
        "run", help="the whole job from one config: dedup, filter, label, classifier, score, "
                    "mix, export, report",
        description="Run every stage a config names, chained through a run directory; "
                    "resumable. See configs/demo.yaml and docs/run.md.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run YAML (sources and every stage's settings)")
    p.add_argument("--output", help="run directory (overrides output: in the config)")
    p.add_argument("--seed", type=int, help="run seed (overrides seed: in the config)")
    p.add_argument("--data-output", metavar="PREFIX",
                   help="where the Beam stages write their data, e.g. gs://BUCKET/run (needed "
                        "with --runner DataflowRunner; default: the run directory)")
    _allow_damaged_arg(p)
    _progress_arg(p)
    return p


def _demo_parser(sub):
    p = sub.add_parser(
        "demo", help="curate run on the demo corpus that ships inside the package",
        description="The whole job (configs/demo.yaml) on the packaged demo corpus: no "
                    "network, no API key needed; about 2 minutes on 2 cores.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="runs/demo", help="run directory (default runs/demo)")
    _allow_damaged_arg(p)
    _progress_arg(p)
    return p


def _run_job(args, beam_args) -> int:
    from curation.progress import Progress
    from curation.runconfig import demo_config_path, load_run_config
    from pipelines.run_all import run_job
    path = demo_config_path() if args.command == "demo" else args.config
    cfg = load_run_config(path, {"output": args.output, "seed": getattr(args, "seed", None),
                                 "data_output": getattr(args, "data_output", None)})
    from classifiers.claude import Interrupted
    progress = Progress(bars={"auto": None, "bars": True, "lines": False}[args.progress])
    try:
        doc = run_job(cfg, beam_args, config_path=str(path), progress=progress,
                      allow_damaged=args.allow_damaged)
    except Interrupted as e:
        progress.close()
        print(f"{args.command}: interrupted while labelling ({e}); the labels so far are in "
              f"the label store: rerun the same command to go on", file=sys.stderr)
        return 130
    finally:
        progress.close()
    stages = {s["name"]: s for s in doc["stages"]}
    if doc["status"] == "dry_run":
        built = next(n for n, s in stages.items() if s["status"] == "dry_run")
        print(f"{args.command}: dry run: the {built} job was built and not submitted; the "
              f"stages after it need its output", file=sys.stderr)
        return 0
    ran = [n for n, s in stages.items() if s["status"] == "complete"]
    reused = [n for n, s in stages.items() if s["status"] == "reused"]
    print(f"{args.command}: {len(ran)} stage(s) run, {len(reused)} reused from an earlier run, "
          f"in {doc['seconds']:.0f} s -> {cfg.output}", file=sys.stderr)
    for note in doc["fallbacks"]:
        print(f"{args.command}: fallback: {note}", file=sys.stderr)
    mix = stages.get("mix") or {}
    if mix.get("status") in ("complete", "reused") and mix.get("verdict"):
        for line in mix["verdict"]:
            print(f"{args.command}: mix: {line}", file=sys.stderr)
    if cfg.report:
        print(f"{args.command}: report: {cfg.output}/report.html", file=sys.stderr)
    return 0


def _report_parser(sub):
    p = sub.add_parser(
        "report", help="(re)write a run directory's mixture report",
        description="Read a run directory (each stage's output directory, and run.json when "
                    "`curate run` wrote it) and write RUN_DIR/report.html (one self-contained "
                    "file), report.md and report.json. Runs no pipeline; see docs/report.md.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--tokens", choices=["auto", "exact", "estimate"], default="auto",
                   help="count the funnel's tokens with the mix run's tokenizer (exact), as "
                        "UTF-8 bytes / 4 (estimate), or exactly up to 1 GiB of input (auto, "
                        "the default: the tokenizer reads about 1 MB/s per core)")
    return p


DEDUP_AUDIT_EPILOG = """\
  curate dedup-audit OUT --output AUDIT [--sample 200] [--seed 0]
      writes AUDIT/audit.html (open it, judge each pair, press "Save choices" and put
      the downloaded choices.json into AUDIT) and AUDIT/pairs.json
  curate dedup-audit AUDIT --score [--choices FILE]
      writes AUDIT/score.json and prints the table
Removed pairs are sampled by the estimated Jaccard of each removed near duplicate with
its cluster's kept document; unmatched pairs (different clusters, estimate from the
threshold - 0.15 up) among a sample of --near-miss-docs documents. Exact duplicates are
counted, not sampled. See docs/audit.md.
"""


def _dedup_audit_parser(sub):
    p = sub.add_parser(
        "dedup-audit", help="sample a dedup run's pairs for a person to judge, then score the choices",
        description="Draw a seeded, stratified sample of document pairs from a `curate dedup` "
                    "output (removed near duplicates by estimated Jaccard band, and unmatched "
                    "pairs just under the threshold) and write one self-contained HTML page to "
                    "judge them; with --score, turn the saved choices into precision and "
                    "recall with 95% intervals. Runs no pipeline.",
        epilog=DEDUP_AUDIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", metavar="OUT|AUDIT",
                   help="the curate dedup output to audit; with --score, the audit directory")
    p.add_argument("--output", metavar="AUDIT", help="audit directory to write (not inside OUT)")
    p.add_argument("--sample", type=int, metavar="N", help="pairs to judge (default 200)")
    p.add_argument("--seed", type=int, metavar="S", help="sampling seed (default 0)")
    p.add_argument("--near-miss-docs", type=int, metavar="N",
                   help="documents sampled to search for unmatched pairs (default 50000; 0: no "
                        "search, no recall)")
    p.add_argument("--near-miss-share", type=float, metavar="F",
                   help="share of the sample given to unmatched pairs (default 0.25)")
    p.add_argument("--score", action="store_true",
                   help="score the choices saved from AUDIT/audit.html instead of sampling")
    p.add_argument("--choices", metavar="FILE",
                   help="with --score: the saved choices (default AUDIT/choices.json)")
    return p


def _run_dedup_audit(args) -> int:
    from curation.audit import AuditError, build_audit, score_audit, score_lines
    sampling = {"--output": args.output, "--sample": args.sample, "--seed": args.seed,
                "--near-miss-docs": args.near_miss_docs, "--near-miss-share": args.near_miss_share}
    try:
        if args.score:
            given = [k for k, v in sampling.items() if v is not None]
            if given:
                raise UsageError(f"dedup-audit --score reads an audit directory: {', '.join(given)} "
                                 f"belong to drawing the sample")
            score = score_audit(args.directory, args.choices)
            for line in score_lines(score):
                print(f"dedup-audit: {line}", file=sys.stderr)
            print(f"dedup-audit: -> {os.path.join(args.directory, 'score.json')}", file=sys.stderr)
            return 0
        if args.choices:
            raise UsageError("--choices goes with --score")
        if not args.output:
            raise UsageError("dedup-audit needs --output AUDIT (or --score to score an audit)")
        build_audit(args.directory, args.output,
                    sample=200 if args.sample is None else args.sample,
                    seed=0 if args.seed is None else args.seed,
                    near_miss_docs=50_000 if args.near_miss_docs is None else args.near_miss_docs,
                    near_miss_share=0.25 if args.near_miss_share is None else args.near_miss_share,
                    log=lambda m: print(m, file=sys.stderr))
        return 0
    except AuditError as e:
        print(f"curate: error: dedup-audit: {e}", file=sys.stderr)
        return e.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=DESCRIPTION)
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _dedup_parser(sub)
    _filter_parser(sub)
    _label_parser(sub)
    _train_parser(sub)
    _score_parser(sub)
    _mix_parser(sub)
    _export_parser(sub)
    _report_parser(sub)
    _dedup_audit_parser(sub)
    verify_cmd.add_parser(sub)
    _run_parser(sub)
    _demo_parser(sub)
    return parser


# what a stage command's flags set that is not one of the stage's settings; every other
# flag is a field of the stage's settings model and is passed on by name
# (tests/test_cli_flags.py)
NOT_SETTINGS = frozenset({"command", "log_level", "config", "overwrite", "allow_damaged", "demo"})
# settings given only in a config file (--config, or curate run's sections)
CONFIG_ONLY = frozenset({"sources", "domain_field"})


def _settings_from_flags(args, config_cls) -> dict:
    return {k: getattr(args, k) for k in config_cls.model_fields if hasattr(args, k)}


def _strict_message(exc: BaseException) -> str | None:
    m = re.search(r"InputError: (.+)", str(exc))
    return m.group(1).split(" [while running")[0].strip() if m else None


def _os_error_message(exc: BaseException, output: str | None) -> str | None:
    """One line naming the path and the cause of a failed read or write (read-only
    directory, disk full), also when Beam wrapped it in its own error."""
    if isinstance(exc, OSError) and exc.errno:
        path = exc.filename or output
        return f"{path}: {exc.strerror} (errno {exc.errno})"
    m = re.search(r"\b\w*(?:OSError|IOError|PermissionError|Error): \[Errno (\d+)\] "
                  r"([^'\[\n]+?)(?:: '([^']+)')?\s*(?:\[while running|\\n|\n|\"|$)", str(exc))
    if not m:
        return None
    path = m.group(3) or (f"writing under {output}" if output else "a file")
    return f"{path}: {m.group(2).strip()} (errno {m.group(1)})"


class _BeamLog(logging.Handler):
    """Holds Beam's log records during a command: a failure we can name in one line
    needs none of its worker tracebacks; anything else gets them all, as before."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < 10_000:
            self.records.append(record)

    def finish(self, show: bool) -> None:
        log = logging.getLogger("apache_beam")
        log.removeHandler(self)
        log.propagate = True
        if show:
            for r in self.records:
                logging.getLogger(r.name).handle(r)
        self.records.clear()


_NO_PIPELINE = ("label", "train-classifier", "mix", "export", "report", "dedup-audit", "verify")


def _own_flags(parser, command: str) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [s for a in sub.choices[command]._actions for s in a.option_strings if s.startswith("--")]


def _check_leftovers(parser, args, beam_args: list[str]) -> None:
    """Arguments no curate parser took: for the Beam commands they must be Beam pipeline
    options, for the others nothing is left over. Checked before anything else, so that
    a typo is named (not reported as a missing --output) and a stray file is an error."""
    from pipelines.errors import unknown_argument
    ours = _own_flags(parser, args.command)
    if args.command in _NO_PIPELINE:
        raise UsageError(f"{args.command}: " + unknown_argument(beam_args[0], ours)
                         .replace("not a curate flag nor a Beam pipeline option", "not a flag of this command"))
    from pipelines.runner import check_beam_args
    check_beam_args(beam_args, tuple(ours))


def _check_report_dir(run_dir: str) -> None:
    from curation.report.rundir import RUN_JSON, STAGES
    REPORT_DIRS = [d for _, d, _ in STAGES]
    if not os.path.exists(run_dir):
        raise UsageError(f"{run_dir} does not exist")
    if not os.path.isdir(run_dir):
        raise UsageError(f"{run_dir} is not a directory")
    if os.path.isfile(os.path.join(run_dir, "manifest.json")) or (
            os.path.isfile(os.path.join(run_dir, "summary.json"))
            and not os.path.isfile(os.path.join(run_dir, RUN_JSON))):
        raise UsageError(f"{run_dir} is one stage's output, not a run directory: give the "
                         f"directory that holds the stages' folders ({', '.join(REPORT_DIRS)}), "
                         f"e.g. {os.path.dirname(os.path.abspath(run_dir))}")
    if not os.path.isfile(os.path.join(run_dir, RUN_JSON)) and not any(
            os.path.isdir(os.path.join(run_dir, d)) for d in REPORT_DIRS):
        raise UsageError(f"{run_dir} holds no stage output ({', '.join(REPORT_DIRS)}): nothing "
                         f"to report on")


INTERRUPTED = ("curate: interrupted; outputs of the unfinished stage are incomplete and a "
               "rerun of the same command redoes it")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\n" + INTERRUPTED, file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    try:
        if beam_args:
            _check_leftovers(parser, args, beam_args)
        if args.command == "report":
            _check_report_dir(args.run_dir)
    except UsageError as e:
        print(f"curate: error: {e}", file=sys.stderr)
        return 2
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # the local runner relays every worker's start-up warnings; they are noise here
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    beam_log = None
    if level >= logging.WARNING:
        beam_log = _BeamLog()
        logging.getLogger("apache_beam").addHandler(beam_log)
        logging.getLogger("apache_beam").propagate = False
    shown = False
    try:
        rc = _dispatch(parser, args, beam_args)
        shown = True
        return rc
    except (ConfigError, UsageError) as e:
        print(f"curate: error: {e}", file=sys.stderr)
        return 2
    except (StageOutcomeError, BalanceError, ClusterError) as e:
        print(f"curate: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - Beam wraps worker errors; surface ours plainly
        from classifiers.labeling import NothingLabelled
        if isinstance(e, NothingLabelled):   # `curate run`'s label stage
            print(f"curate: error: label: {e}", file=sys.stderr)
            return 5
        msg = _strict_message(e)
        if msg:
            print(f"curate: bad input (--strict): {msg}", file=sys.stderr)
            return 3
        msg = _os_error_message(e, getattr(args, "output", None))
        if msg:
            print(f"curate: error: {msg}", file=sys.stderr)
            return 1
        m = re.search(r"LargeClusterError: (.+?)(?: \[while running|$)", f"{type(e).__name__}: {e}", re.S)
        if m:        # --on-large-cluster fail: a decision of ours, said plainly
            print(f"curate: error: {m.group(1).strip()}", file=sys.stderr)
            return 1
        shown = True
        raise
    finally:
        if beam_log is not None:
            beam_log.finish(show=shown)


def _dispatch(parser, args, beam_args: list[str]) -> int:
    if args.command == "dedup":
        from pipelines.run_dedup import run_dedup
        return _run_stage(parser, args, beam_args, DedupConfig, run_dedup,
                          lambda c: f"{c['input']} in, {c['kept']} kept, {c['removed_exact']} exact "
                                    f"and {c['removed_near']} near duplicates removed, "
                                    + (f"{c['removed_exact_index']} exact and {c['removed_near_index']} "
                                       f"near duplicates of the index removed, "
                                       if "removed_exact_index" in c else "")
                                    + f"{c['rejected']} rejected", has_config=True)
    if args.command == "filter":
        from pipelines.run_filter import run_filter
        return _run_stage(parser, args, beam_args, FilterRunConfig, run_filter,
                          lambda c: f"{c['input']} in, {c['kept']} kept ({c['edited']} edited), "
                                    f"{c['removed']} removed, {c['rejected']} rejected",
                          has_config=False)
    if args.command == "score":
        if not args.model:
            parser.error("score needs --model")
        from pipelines.run_score import run_score
        return _run_stage(parser, args, beam_args, ScoreRunConfig, run_score,
                          lambda c: f"{c['input']} in, {c['scored']} scored, {c['kept']} kept, "
                                    f"{c['removed']} removed, {c['rejected']} rejected",
                          has_config=False)
    if args.command == "label":
        return _run_label(parser, args)
    if args.command == "train-classifier":
        return _run_train(args)
    if args.command == "mix":
        return _run_mix(args)
    if args.command == "export":
        return _run_export(args)
    if args.command == "report":
        from curation.report import write_report
        write_report(args.run_dir, log=lambda m: print(m, file=sys.stderr), tokens=args.tokens)
        return 0
    if args.command == "dedup-audit":
        return _run_dedup_audit(args)
    if args.command == "verify":
        from pipelines.verify_cmd import run as run_verify
        return run_verify(args)
    if args.command in ("run", "demo"):
        return _run_job(args, beam_args)
    return 1


def _interrupted(signum, frame) -> None:
    # a KeyboardInterrupt raised inside Beam's runner can be swallowed there, and its
    # threads would hold the process open: end now. Outputs are written under temporary
    # names, the lock is an flock, and the worker processes end with this one
    # (pipelines.worker_main); `curate run`'s labelling installs its own graceful handler.
    sys.stdout.flush()
    sys.stderr.write("\n" + INTERRUPTED + "\n")
    sys.stderr.flush()
    os._exit(130)


def entry() -> None:
    """The `curate` console script."""
    import signal
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    sys.exit(main())


if __name__ == "__main__":
    entry()
