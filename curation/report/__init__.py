"""The mixture report: what a run did to the corpus and why it chose its mixture.

`write_report(run_dir)` reads a run directory (see docs/report.md: one subdirectory
per stage, each the output of its stage command, and run.json when `curate run` wrote
it) and writes RUN_DIR/report.json (every number), report.md (tables) and
report.html (one self-contained file: inline CSS and SVG plots, nothing fetched).

The same run directory gives byte-identical files, except the "timings" part of the
JSON and the "Time per stage" section (id "timings"), which hold what changes from run
to run. Plain Python, no Beam.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

from curation.fs import write_atomic
from curation.report.document import build_sections, headline
from curation.report.funnel import compute_funnel
from curation.report.render import to_html, to_markdown
from curation.report.rundir import open_run_dir
from curation.report.sections import (classifier_section, cost_section, crawl_section, export_section, mixture_section,
                                      scores_section, stages_section, timings_section)
from curation.report.tokens import TokenCounter

__all__ = ["REPORT_FILES", "build_report", "write_report"]

REPORT_FILES = ("report.json", "report.md", "report.html")
VERSION = 1


def _input_bytes(rd) -> int | None:
    files = ((rd.stage("dedup").data or {}).get("parameters") or {}).get("files") \
        if isinstance(rd.stage("dedup").data, dict) else None
    sizes = [f.get("bytes") for f in files or []]
    return sum(sizes) if sizes and None not in sizes else None


def build_report(run_dir: str | os.PathLike, *, tokens: str = "auto") -> dict:
    """The report's numbers (what report.json holds) for the run directory. ``tokens``:
    "exact" (the mix run's tokenizer), "estimate" (bytes / 4), or "auto" (exact up to
    1 GiB of input)."""
    rd = open_run_dir(os.fspath(run_dir))
    counter = TokenCounter.for_run(rd.stage("mix").path, mode=tokens, input_bytes=_input_bytes(rd))
    f = compute_funnel(rd, counter)
    crawl = crawl_section(rd)
    return {
        "version": VERSION,
        "stages": stages_section(rd),
        "funnel": f["funnel"],
        "clusters": f["clusters"],
        "filter_rules": f["filter_rules"],
        **({"crawl": crawl} if crawl else {}),    # a run that read WARC or redacted PII
        "checks": f["checks"],
        "scores": scores_section(rd),
        "classifier": classifier_section(rd),
        "mixture": mixture_section(rd),
        "export": export_section(rd),
        "cost": cost_section(rd),
        "timings": timings_section(rd),
    }


def _finite(x: Any) -> Any:
    # JSON has no NaN: a missing number is null
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_report(run_dir: str | os.PathLike, log: Callable[[str], None] = print, *,
                 tokens: str = "auto") -> dict:
    """(Re)write RUN_DIR/report.json, report.md and report.html; returns the report's
    numbers (the content of report.json)."""
    path = os.fspath(run_dir)
    report = _finite(build_report(path, tokens=tokens))
    title = f"Mixture report: {os.path.basename(os.path.abspath(path))}"
    sections = build_sections(report)
    top = headline(report)
    files = {
        "report.json": json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        "report.md": to_markdown(title, sections, top),
        "report.html": to_html(title, sections, top),
    }
    for name, text in files.items():
        write_atomic(os.path.join(path, name), text.encode("utf-8"))
    failed = [c["name"] for c in report["checks"] if not c["ok"]]
    log(f"report: {sum(s['complete'] for s in report['stages']['stages'])} of "
        f"{len(report['stages']['stages'])} stages ran; "
        + (f"{len(failed)} check(s) failed: {'; '.join(failed)}" if failed else "every check passed")
        + f" -> {os.path.join(path, 'report.html')}")
    return report
