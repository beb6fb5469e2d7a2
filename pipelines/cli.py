"""The `curate` command line. Flags we do not know go to Beam's PipelineOptions,
so `--runner DataflowRunner --project ... --region ... --temp_location gs://...`
passes through unchanged."""
from __future__ import annotations

import argparse
import logging
import re
import sys

from curation.config import ConfigError, DedupConfig, FilterRunConfig, load_config
from pipelines.runner import UsageError

DESCRIPTION = "curate: deduplicate, filter and mix pre-training corpora on Apache Beam."

DEDUP_EPILOG = """\
Any other --flag is passed to Beam's PipelineOptions, e.g.
  --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
  --direct_num_workers 4   (local runner; default: every core)
Without --runner the job runs on Beam's local FnApiRunner with no network.
"""


def _input_output_args(p, *, config_help: str | None, strict_help: str):
    io = p.add_argument_group("input and output")
    io.add_argument("--input", action="append", dest="inputs", metavar="PATTERN",
                    help="JSONL (.gz/.zst), Parquet, a Hugging Face datasets directory, "
                         "or a glob of them; repeatable")
    io.add_argument("--demo", action="store_true",
                    help="use the demo corpus that ships inside the package as input")
    io.add_argument("--output", help="output directory (local path or gs://...)")
    if config_help:
        io.add_argument("--config", help=config_help)
    io.add_argument("--output-format", choices=["parquet", "jsonl.gz"], default=None,
                    help="shard format (default parquet)")
    io.add_argument("--text-field", help="field holding the text (default text; dotted paths reach nested fields)")
    io.add_argument("--id-field", help="field holding the id (default id; missing ids become FILE:LINE)")
    io.add_argument("--domain", help="domain label for every input document (default: the record's domain field)")
    io.add_argument("--max-doc-bytes", type=int, help="reject records larger than this (default 8 MiB)")
    io.add_argument("--strict", action="store_true", default=None, help=strict_help)
    io.add_argument("--overwrite", action="store_true",
                    help="rerun even when OUTPUT already holds a complete run with the same settings")
    return io


def _dedup_parser(sub):
    p = sub.add_parser(
        "dedup", help="remove exact and near-duplicate documents",
        description="Remove exact duplicates (same normalised text) and near duplicates "
                    "(MinHash LSH, Jaccard of word n-grams) from a corpus.",
        epilog=DEDUP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _input_output_args(p, config_help="YAML file with these settings; flags override it",
                       strict_help="stop at the first bad record, naming file and line, instead of rejecting it")
    mh = p.add_argument_group("near duplicates")
    mh.add_argument("--threshold", type=float, help="Jaccard threshold for near duplicates (default 0.8)")
    mh.add_argument("--num-perm", type=int, help="MinHash permutations (default 128)")
    mh.add_argument("--ngram", type=int, help="shingle size in words (default 5)")
    mh.add_argument("--char-ngrams", action="store_true", default=None,
                    help="shingle characters of the normalised text instead of words")
    mh.add_argument("--seed", type=int, help="MinHash seed (default 1)")
    mh.add_argument("--backend", choices=["auto", "numpy", "numba", "cupy"],
                    help="signature backend (default auto: CuPy on a CUDA GPU, else compiled CPU)")
    mh.add_argument("--family", choices=["minhash", "oph"],
                    help="signature family: k-permutation MinHash (default) or one-permutation "
                         "hashing with optimal densification (faster, and more accurate on our benchmark)")
    mh.add_argument("--bands", type=int, help="LSH bands (default: derived from the threshold)")
    mh.add_argument("--rows", type=int, help="LSH rows per band (with --bands)")
    mh.add_argument("--verify", choices=["estimate", "exact", "none"],
                    help="check candidate pairs with the signature's Jaccard estimate (default), "
                         "the exact shingle Jaccard, or not at all")
    mh.add_argument("--verify-tolerance", type=float,
                    help="with --verify estimate, accept estimates down to this many standard "
                         "errors below the threshold (default 2; 0 = the threshold itself); "
                         "LSH bands are chosen for that lower candidate threshold")
    mh.add_argument("--cc-max-rounds", type=int,
                    help="large-star/small-star rounds unrolled in the graph (default 24); "
                         "the run fails if the last one still changed a label")
    mh.add_argument("--lsh-partitions", type=int,
                    help="shuffle partitions per LSH band (default 64); each holds about "
                         "documents/partitions band keys, so raise it for billions of documents")
    mh.add_argument("--batch-size", type=int, help="documents per signature batch (default 2048)")
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
    _input_output_args(p, config_help=None,
                       strict_help="stop at the first bad record or filter error, naming file "
                                   "and line, instead of rejecting it")
    fl = p.add_argument_group("filters")
    which = fl.add_mutually_exclusive_group()
    which.add_argument("--preset", choices=list(PRESETS),
                       help="a built-in filter chain (default fineweb)")
    which.add_argument("--config", dest="filters_config", metavar="FILE",
                       help="a filter YAML (the filters, in order, and their parameters; see docs/filters.md) "
                            "instead of a preset")
    fl.add_argument("--removed-sample", type=int, metavar="N",
                    help="write at most N removed documents per rule to removed/: the first N in "
                         "input order (files sorted by path, then line); default: all")
    return p


def _run_stage(parser, args, beam_args, config_cls, keys, run, summary, *, has_config: bool) -> int:
    """Config from flags (and --config), inputs and output checked, the stage run, one
    line of counts on stderr."""
    from curation.demo import demo_glob
    overrides = {k: getattr(args, k) for k in keys}
    if args.demo:
        overrides["inputs"] = [demo_glob()] + list(args.inputs or [])
    cfg = load_config(config_cls, args.config if has_config else None, overrides)
    if not cfg.inputs:
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=DESCRIPTION)
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _dedup_parser(sub)
    _filter_parser(sub)
    return parser


_INPUT_KEYS = ("inputs", "output", "output_format", "text_field", "id_field", "domain",
               "max_doc_bytes", "strict")
_FILTER_KEYS = _INPUT_KEYS + ("preset", "filters_config", "removed_sample")
_CONFIG_KEYS = _INPUT_KEYS + ("threshold", "num_perm", "ngram", "char_ngrams", "seed", "backend",
                              "family", "bands", "rows", "verify", "verify_tolerance", "cc_max_rounds",
                              "lsh_partitions", "batch_size")


def _strict_message(exc: BaseException) -> str | None:
    m = re.search(r"InputError: (.+)", str(exc))
    return m.group(1).strip() if m else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    # the local runner relays every worker's start-up warnings; they are noise here
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    try:
        if args.command == "dedup":
            from pipelines.run_dedup import run_dedup
            return _run_stage(parser, args, beam_args, DedupConfig, _CONFIG_KEYS, run_dedup,
                              lambda c: f"{c['input']} in, {c['kept']} kept, {c['removed_exact']} exact "
                                        f"and {c['removed_near']} near duplicates removed, "
                                        f"{c['rejected']} rejected", has_config=True)
        if args.command == "filter":
            from pipelines.run_filter import run_filter
            return _run_stage(parser, args, beam_args, FilterRunConfig, _FILTER_KEYS, run_filter,
                              lambda c: f"{c['input']} in, {c['kept']} kept ({c['edited']} edited), "
                                        f"{c['removed']} removed, {c['rejected']} rejected",
                              has_config=False)
    except (ConfigError, UsageError) as e:
        print(f"curate: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - Beam wraps worker errors; surface ours plainly
        msg = _strict_message(e)
        if msg:
            print(f"curate: bad input (--strict): {msg}", file=sys.stderr)
            return 3
        raise
    return 1


if __name__ == "__main__":
    sys.exit(main())
