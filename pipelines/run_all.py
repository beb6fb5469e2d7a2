"""`curate run`: every stage from one config, chained through a run directory.

RUN/dedup, filter, label, classifier, score, mix and export are each exactly the
output directory of the stage's own command; RUN/run.json records, per stage, a
fingerprint of its settings and of everything upstream, its status, time, cost and
any fallback. A rerun skips a stage whose record is complete with the same
fingerprint and whose output is there; any other stage is cleared and redone, so a
stage cut off halfway never counts. The label store (RUN/cache/labels.sqlite) and
the proxy-run cache (RUN/mix/proxy_cache.jsonl) survive a redo: what was paid for
or computed once is not paid for or computed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from curation.config import ConfigError
from curation.manifest import chain_links, dumps, package_versions
from curation.memwatch import TreeMemory, available as memwatch_available
from curation.fs import writing
from curation.fs import write_atomic
from curation.progress import Progress
from curation.runconfig import RunConfig
from pipelines.errors import UsageError

RUN_FILE = "run.json"
STAGE_DIRS = {"dedup": "dedup", "filter": "filter", "label": "label", "train": "classifier",
              "score": "score", "mix": "mix", "export": "export", "report": "."}
# the file each stage writes last: its presence (with the run.json record) marks it complete
MARKERS = {"dedup": "manifest.json", "filter": "manifest.json", "label": "summary.json",
           "train": "metrics.json", "score": "manifest.json", "mix": "summary.json",
           "export": "manifest.json", "report": "report.json"}
# kept when a stage is redone: they hold paid-for or computed results, keyed by content
KEEP_ON_REDO = {"mix": ("proxy_cache.jsonl",)}
BEAM_STAGES = ("dedup", "filter", "score")
# what the report and the rerun check read of a Beam stage whose data is elsewhere: the
# records of what was removed and why, not the kept documents
MIRRORED = ("clusters", "removed", "rejected")
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "direct")
LABEL_STORE = "cache/labels.sqlite"
DEMO_CRAWL_DIR = "demo_crawl"   # the demo's crawl, block list and evaluation set


class DryRunDone(Exception):
    """A Beam stage was built with --dry_run and not run: the stages after it have
    nothing to read, so the run ends there."""

    def __init__(self, stage: str, manifest: dict):
        super().__init__(stage)
        self.stage, self.manifest = stage, manifest


def _has_key() -> bool:
    return bool(os.environ.get("ANTHROPIC_API_KEY", "").strip())


def _fingerprint(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


class RunDir:
    """run.json: read at start, rewritten atomically after every stage."""

    def __init__(self, root: Path, cfg: RunConfig, config_path: str):
        self.root = root
        self.path = root / RUN_FILE
        prev = {}
        if self.path.exists():
            try:
                prev = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                prev = {}
        self.previous = {s["name"]: s for s in prev.get("stages", [])}
        self.doc = {"command": "run", "status": "running", "config_path": config_path,
                    "seed": cfg.seed, "config": cfg.model_dump(mode="json"),
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "versions": package_versions(), "stages": [], "fallbacks": []}

    def record(self, stage: dict) -> None:
        self.doc["stages"] = [s for s in self.doc["stages"] if s["name"] != stage["name"]] + [stage]
        self.save()

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, dumps(self.doc).encode("utf-8"))

    def complete(self, name: str, fingerprint: str) -> bool:
        prev = self.previous.get(name)
        return bool(prev and prev.get("status") in ("complete", "reused")
                    and prev.get("fingerprint") == fingerprint
                    and (self.root / STAGE_DIRS[name] / MARKERS[name]).exists())


def _clear(stage_dir: Path, keep: tuple[str, ...], ours: bool = True) -> None:
    if not stage_dir.exists():
        return
    if not ours:   # no earlier run recorded this stage: what is there is someone else's
        from curation.outputs import OutputError
        found = sorted(p for p in stage_dir.rglob("*") if p.is_file())
        if found:
            raise OutputError(f"{stage_dir} holds {found[0]}, which no curate run wrote; "
                              f"refusing to delete it: move it, or choose another run directory")
    for p in sorted(stage_dir.iterdir()):
        if p.name in keep:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


class Job:
    def __init__(self, cfg: RunConfig, beam_args: list[str], *, config_path: str,
                 progress: Progress, base_url: str | None = None, allow_damaged: bool = False):
        self.cfg, self.beam_args, self.progress = cfg, beam_args, progress
        self.allow_damaged = allow_damaged
        from pipelines.fs import BeamFS
        self.root = Path(cfg.output).resolve()
        self.run = RunDir(self.root, cfg, config_path)
        self.fs = BeamFS()
        self.data_root = cfg.data_output.rstrip("/") if cfg.data_output else str(self.root)
        self.remote = cfg.data_output is not None
        self.base_url = base_url
        self.fp: dict[str, str] = {}
        self.summary: dict[str, dict] = {}

    def log(self, msg: str) -> None:
        self.progress.log(msg)

    def dir(self, stage: str) -> Path:
        return self.root / STAGE_DIRS[stage]

    def data_dir(self, stage: str) -> str:
        """Where a Beam stage writes (and the classifier the score stage loads)."""
        return self.fs.join(self.data_root, STAGE_DIRS[stage])

    def mirror(self, stage: str) -> None:
        """The manifest and removal records of a Beam stage whose data is elsewhere,
        copied into the run directory (the manifest last: it marks the copy complete)."""
        if not self.remote:
            return
        src, dst = self.data_dir(stage), self.dir(stage)
        for sub in MIRRORED:
            for path in self.fs.match(self.fs.join(src, sub, "*")):
                self._copy(path, dst / sub / path.rsplit("/", 1)[-1])
        for path in self.fs.match(self.fs.join(src, "*.json")):
            if not path.endswith("/manifest.json"):
                self._copy(path, dst / path.rsplit("/", 1)[-1])
        self._copy(self.fs.join(src, "manifest.json"), dst / "manifest.json")

    def _copy(self, src: str, dst: Path) -> None:
        with self.fs.open_read(src) as f:
            write_atomic(dst, f.read())

    def upload(self, stage: str) -> str:
        """The local output of a driver stage copied to the data location (the score
        stage's workers load the classifier from there)."""
        if not self.remote:
            return str(self.dir(stage))
        dst = self.data_dir(stage)
        for p in sorted(self.dir(stage).iterdir()):
            if p.is_file():
                with writing(self.fs, self.fs.join(dst, p.name)) as f:
                    f.write(p.read_bytes())
        return dst

    # ------------------------------------------------------------------ stage inputs

    def documents_of(self, *stages: str) -> str:
        """The kept documents of the last enabled stage among ``stages`` (else the sources)."""
        for s in reversed(stages):
            if self.cfg.enabled(s):
                return self.fs.join(self.data_dir(s), "documents")
        return ""

    def upstream(self, *stages: str) -> list[str]:
        return [self.fp[s] for s in stages if s in self.fp]

    def demo_sources(self) -> list[tuple[list[str], str | None]]:
        """The demo corpus, its web domain as a crawl built into the run directory
        (curation.demo.crawl): extraction, URL blocking, PII and decontamination on
        the way in."""
        from curation.demo import demo_files
        from curation.demo.crawl import WEB
        crawl = self.demo_crawl()
        return [([f for f in demo_files() if f != str(WEB)], None), ([crawl["warc"]], "web")]

    def demo_filters(self, data: dict) -> dict:
        """The demo's filter section, with the crawl's filters after its chain: url (the
        crawl's block list), pii and decontaminate (its evaluation set), written to
        demo_crawl/filters.yaml and run from there."""
        import yaml

        from curation.filters.config import DEFAULT_PRESET, preset_path, read_yaml_mapping
        crawl = getattr(self, "crawl", None) or self.demo_crawl()
        config, preset = data.pop("filters_config", None), data.pop("preset", None)
        own = read_yaml_mapping(config or preset_path(preset or DEFAULT_PRESET), "filter config")
        if "preset" in own:
            own = read_yaml_mapping(preset_path(own["preset"]), "filter config")
        chain = {"description": "the demo's chain, then the filters its crawl needs",
                 "filters": list(own.get("filters", [])) + [
                     {"url": {"domains_file": crawl["blocklist"]}}, "pii",
                     {"decontaminate": {"eval_files": [crawl["evals"]]}}]}
        if own.get("overrides"):
            chain["overrides"] = own["overrides"]
        path = self.root / DEMO_CRAWL_DIR / "filters.yaml"
        text = yaml.safe_dump(chain, sort_keys=False)
        if not (path.is_file() and path.read_text("utf-8") == text):
            with writing(None, str(path)) as f:
                f.write(text.encode("utf-8"))
        return {**data, "filters_config": str(path)}

    def demo_crawl(self) -> dict[str, str]:
        from curation.demo.crawl import build
        self.crawl = build(self.root / DEMO_CRAWL_DIR)
        return self.crawl

    def source_spec(self) -> dict:
        from curation.io import expand_sources
        from pipelines.runs import file_stat
        if self.cfg.demo:
            sources = self.demo_sources()
        else:
            sources = [(s.input, s.domain) for s in self.cfg.sources]
        try:
            files = expand_sources(sources, fs=self.fs)
        except ValueError as e:
            raise UsageError(f"sources: {e}") from None
        return {"sources": [{"input": list(p), "domain": d} for p, d in sources],
                "files": [{"path": f.path, "domain": f.domain, **file_stat(f.path)} for f in files],
                "fields": {k: getattr(self.cfg, k) for k in ("text_field", "id_field", "domain_field",
                                                             "max_doc_bytes", "strict")}}

    # ------------------------------------------------------------------ the stages

    def beam_stage(self, stage: str, title: str, run, cfg, keys: tuple[str, ...]) -> dict:
        """One of the Beam stages (dedup, filter, score): run, mirrored, counted."""
        with self.progress.task(f"{stage}: {title} (Beam)", unit="documents") as t:
            m = run(cfg, self.beam_args, overwrite=True)
            if m["status"] == "dry_run":
                raise DryRunDone(stage, m)
            t.advance(m["counts"]["input"])     # the local runner reports counts at the end
        from pipelines.outcome import check_stage_outcome
        check_stage_outcome(stage, m, self.fs, self.data_dir(stage), text_field=self.cfg.text_field,
                            allow_damaged=self.allow_damaged, warn=self.log)
        self.mirror(stage)
        return {"counts": {k: m["counts"][k] for k in keys}}

    def stage_dedup(self, src: dict) -> dict:
        from curation.config import DedupConfig
        from pipelines.run_dedup import run_dedup
        dc = DedupConfig.model_validate({
            **self.cfg.dedup, "sources": src["sources"], "output": self.data_dir("dedup"),
            "output_format": self.cfg.output_format, **src["fields"]})
        return self.beam_stage("dedup", "exact and near duplicates", run_dedup, dc,
                               ("input", "kept", "removed_exact", "removed_near", "rejected"))

    def stage_filter(self, src: dict) -> dict:
        from curation.config import FilterRunConfig
        from pipelines.run_filter import run_filter
        data = {**self.cfg.filter, "output": self.data_dir("filter"),
                "output_format": self.cfg.output_format}
        if self.cfg.demo:
            data = self.demo_filters(data)
        if self.cfg.enabled("dedup"):
            data["inputs"] = [self.documents_of("dedup")]
        else:
            data.update({"sources": src["sources"], **src["fields"]})
        return self.beam_stage("filter", "heuristic rules", run_filter,
                               FilterRunConfig.model_validate(data),
                               ("input", "kept", "removed", "rejected"))

    def stage_label(self, src: dict) -> dict:
        from classifiers.claude import NoApiKey
        from classifiers.labeling import LabelConfig, run_label
        section = dict(self.cfg.label)
        fallback = section.pop("fallback", "heuristic")
        section.setdefault("seed", self.cfg.seed)
        data = {**section, "inputs": [self.documents_of("dedup", "filter")],
                "output": str(self.dir("label")), "store": str(self.root / LABEL_STORE)}
        (self.root / LABEL_STORE).parent.mkdir(parents=True, exist_ok=True)
        cfg = LabelConfig.model_validate(data)
        note = None
        from pipelines.stopping import stop_on_signals
        with self.progress.task("label: grading the sample", unit="documents") as t, \
                stop_on_signals("label") as stop:
            try:
                s = run_label(cfg, log=self.log, base_url=self.base_url, progress=t, stop=stop,
                              fs=self.fs)
            except NoApiKey as e:
                if fallback != "heuristic":
                    raise UsageError(f"label: {e} (label.fallback is none)") from None
                note = ("label: heuristic labeler instead of Claude: no ANTHROPIC_API_KEY in the "
                        "environment (scores come from four heuristic rule sets, not a rubric)")
                self.log(note)
                cfg = LabelConfig.model_validate({**data, "labeler": "heuristic", "model": cfg.model})
                s = run_label(cfg, log=self.log, progress=t, fs=self.fs)
        c = s["counts"]
        if s.get("budget_stop"):
            note = "; ".join(x for x in (note, f"label: {s['budget_stop']}: {c['labelled']} of "
                                               f"{c['sampled']} sampled documents labelled") if x)
        return {"counts": c, "fallback": note, "cost_usd": s["cost_usd"],
                "api_tokens": {"input": s["tokens"]["input"], "output": s["tokens"]["output"]}
                if s["labeler"] == "claude" else None}

    def stage_train(self, src: dict) -> dict:
        from classifiers.fasttext_train import train_classifier
        from classifiers.labeling import LABELS_FILE, SUMMARY_FILE
        from curation.config import ClassifierConfig
        c = ClassifierConfig.model_validate(self.cfg.classifier)
        labels = self.dir("label") / LABELS_FILE
        threshold = json.loads((self.dir("label") / SUMMARY_FILE).read_text("utf-8"))["threshold"]
        with labels.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        params = c.model_dump()
        params["seed"] = self.cfg.seed if c.seed is None else c.seed
        with self.progress.task("train-classifier: fastText"):
            try:
                res = train_classifier(rows, self.dir("train"), threshold=threshold,
                                       data_description=f"Labels from {labels} (threshold {threshold}).",
                                       **params)
            except ValueError as e:
                raise UsageError(f"classifier: {e}") from None
        self.upload("train")
        h = res.metrics["held_out"]
        return {"counts": {"labels": len(rows)},
                "held_out": {k: h[k] for k in ("f1", "precision", "recall", "roc_auc")}}

    def stage_score(self, src: dict) -> dict:
        from curation.config import ScoreRunConfig
        from pipelines.run_score import run_score
        data = {**self.cfg.score, "inputs": [self.documents_of("dedup", "filter")],
                "output": self.data_dir("score"), "model": self.data_dir("train"),
                "output_format": self.cfg.output_format}
        return self.beam_stage("score", "quality classifier", run_score,
                               ScoreRunConfig.model_validate(data),
                               ("input", "scored", "kept", "removed", "rejected"))

    def stage_mix(self, src: dict) -> dict:
        from curation.mixture.config import MixConfig
        from curation.mixture.run import run_mix
        section = json.loads(json.dumps(self.cfg.mix))
        search = section.setdefault("search", {})
        search.setdefault("seed", self.cfg.seed)
        section.setdefault("split", {}).setdefault("seed", self.cfg.seed)
        stages = {s: str(self.dir(s) / "manifest.json") for s in ("dedup", "filter", "score")
                  if self.cfg.enabled(s)}
        data = {**section, "inputs": [self.documents_of("dedup", "filter", "score")],
                "output": str(self.dir("mix")), "stages": stages}
        if not data["inputs"][0]:
            data["inputs"] = []
            if self.cfg.demo:
                data["demo"] = True
            else:
                data["sources"] = {}
                for s in src["sources"]:
                    if s["domain"] is None:
                        raise UsageError("mix without an earlier stage needs a domain on every source")
                    data["sources"].setdefault(s["domain"], []).extend(s["input"])
        cfg = MixConfig.model_validate(data)
        with self.progress.task("mix: proxy runs", unit="runs") as t:
            s = run_mix(cfg, log=self.log, base_url=self.base_url, progress=t, fs=self.fs)
        notes = [f"mix: {'Claude' if name == 'claude' else name} proposer {why}"
                 for name, why in sorted(s["skipped_proposers"].items())]
        cl = s.get("claude")
        from curation.mixture.outputs import mix_verdict_lines
        return {"counts": {"proxy_runs": s["proxy_runs"], "computed": s["proxy_runs_computed"],
                           "fidelity_runs": s["fidelity_runs"]},
                "chosen": s["chosen_strategy"], "verdict": mix_verdict_lines(s), "fallback": "; ".join(notes) or None,
                "cost_usd": cl["cost_usd"] if cl else None,
                "api_tokens": {"input": cl["input_tokens"], "output": cl["output_tokens"]} if cl else None}

    def stage_export(self, src: dict) -> dict:
        from curation.mixture.export import export_mixture
        from curation.config import ExportConfig
        e = ExportConfig.model_validate(self.cfg.export)
        with self.progress.task(f"export: {e.tokens:,} tokens"):
            m = export_mixture(str(self.dir("mix") / "mixture.yaml"), str(self.dir("export")),
                               e.tokens, seed=self.cfg.seed if e.seed is None else e.seed,
                               shard_docs=e.shard_docs, fmt=e.format, tokenizer=e.tokenizer,
                               eod_id=e.eod_id, log=self.log, fs=self.fs)
        return {"counts": {"tokens_asked": m["tokens_asked"], "tokens_achieved": m["tokens_achieved"]}}

    def stage_report(self, src: dict) -> dict:
        from curation.report import write_report
        with self.progress.task("report"):
            write_report(str(self.root), log=self.log, tokens=self.cfg.report_tokens)
        return {}

    # ------------------------------------------------------------------ driver

    def stage_files(self, stage: str) -> list[str]:
        """What differs between a stage's output and its manifest's inventory (the Beam
        stages and export); empty when they agree or there is none to check."""
        from curation.outputs import read_manifest, verify_files
        where = self.data_dir(stage) if stage in BEAM_STAGES else str(self.dir(stage))
        m = read_manifest(where, self.fs)
        if m is None or not isinstance(m.get("files"), dict):
            return []
        return verify_files(where, m["files"], self.fs)

    def intact(self, stage: str) -> bool:
        problems = self.stage_files(stage)
        if problems:
            self.log(f"run: {stage}: its output is not as it was written ({problems[0]}"
                     f"{f', and {len(problems) - 1} more' if len(problems) > 1 else ''}); redoing it")
        return not problems

    def chain_check(self) -> list[dict]:
        """Conservation across stages: what one stage kept is what the next one read;
        and every Beam stage's files are still those its manifest lists."""
        for s in BEAM_STAGES:
            problems = self.stage_files(s) if self.cfg.enabled(s) else []
            if problems:
                raise RuntimeError(f"{s}: the output is not as it was written: {problems[0]}")
        recs = {r["name"]: r for r in self.run.doc["stages"] if "counts" in r}
        links = chain_links([(s, recs[s]["counts"]) for s in BEAM_STAGES if s in recs])
        bad = [lk for lk in links if not lk["ok"]]
        if bad:
            raise RuntimeError(f"documents lost between stages: {bad}")
        return links

    def execute(self) -> dict:
        from curation.runconfig import STAGES
        cfg = self.cfg
        t_run = time.time()
        src = self.source_spec()
        self.run.save()
        upstream_of = {"dedup": (), "filter": ("dedup",), "label": ("dedup", "filter"),
                       "train": ("label",), "score": ("dedup", "filter", "train"),
                       "mix": ("dedup", "filter", "score"), "export": ("mix",), "report": ()}
        enabled = [s for s in STAGES if cfg.enabled(s)]
        for n, stage in enumerate(STAGES, 1):
            name = f"[{n}/{len(STAGES)}] {stage}"
            if stage == "report":
                self.run.doc["chain"] = self.chain_check()
            if stage not in enabled:
                if stage == "report":
                    # a report left by an earlier run would describe other outputs
                    from curation.report import REPORT_FILES
                    for f in REPORT_FILES:
                        (self.root / f).unlink(missing_ok=True)
                self.run.record({"name": stage, "dir": STAGE_DIRS[stage], "status": "disabled"})
                self.log(f"run: {name}: disabled in the config")
                continue
            extra = {}
            if stage == "dedup" or (stage == "filter" and not cfg.enabled("dedup")):
                extra["sources"] = src
            if stage in ("label", "mix"):
                extra["claude_key"] = _has_key()   # a key set later makes the fallback stage rerun
            fp = _fingerprint(stage, cfg.section(stage), cfg.seed, cfg.output_format, extra,
                              self.upstream(*upstream_of[stage]))
            self.fp[stage] = fp
            prev = self.run.previous.get(stage)
            if stage != "report" and self.run.complete(stage, fp) and self.intact(stage):
                rec = {**prev, "status": "reused"}
                self.run.record(rec)
                if rec.get("fallback"):
                    self.run.doc["fallbacks"].append(rec["fallback"])
                self.log(f"run: {name}: complete from an earlier run with the same settings; skipped")
                continue
            if stage != "report":
                _clear(self.dir(stage), KEEP_ON_REDO.get(stage, ()), ours=stage in self.run.previous)
            else:
                # the report reads run.json: every stage before it is done
                self.run.doc["status"] = "complete"
            self.log(f"run: {name}: running")
            t0 = time.time()
            rec = {"name": stage, "dir": STAGE_DIRS[stage], "status": "running", "fingerprint": fp}
            self.run.record(rec)
            mem = TreeMemory(interval=0.25).start() if memwatch_available() else None
            try:
                try:
                    out = getattr(self, f"stage_{stage}")(src)
                finally:
                    if mem is not None:
                        mem.stop()
                        # the whole process tree (Beam's local workers included), in MiB
                        rec["peak_memory_mib"] = {"pss": round(mem.peak_pss / 2**20, 1),
                                                  "rss": round(mem.peak_rss / 2**20, 1)}
                        rec["cpu_s"] = round(mem.cpu_s, 1)
            except DryRunDone as e:
                self.run.record({**rec, "status": "dry_run", "runner": e.manifest.get("runner")})
                self.run.doc["status"] = "dry_run"
                self.run.save()
                self.log(f"run: {name}: dry run on {e.manifest.get('runner')}: the job was built "
                         f"and not submitted; the stages after it need its output, so the run "
                         f"ends here")
                return self.run.doc
            except BaseException:
                self.run.record({**rec, "status": "failed", "seconds": round(time.time() - t0, 3)})
                self.run.doc["status"] = "failed"
                self.run.save()
                raise
            rec = {**rec, "status": "complete", "seconds": round(time.time() - t0, 3),
                   "fallback": out.pop("fallback", None), "cost_usd": out.pop("cost_usd", None),
                   "api_tokens": out.pop("api_tokens", None), **out}
            if rec["fallback"]:
                self.run.doc["fallbacks"].append(rec["fallback"])
            self.run.record(rec)
            self.log(f"run: {name}: done in {rec['seconds']:.1f} s")
        self.run.doc.update({"status": "complete",
                             "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "seconds": round(time.time() - t_run, 3)})
        self.run.save()
        return self.run.doc


def run_job(cfg: RunConfig, beam_args: list[str], *, config_path: str,
            progress: Progress | None = None, base_url: str | None = None,
            allow_damaged: bool = False) -> dict:
    from pipelines.runner import check_beam_args
    check_beam_args(beam_args)
    from pipelines.runner import is_dask_runner, pop_flag
    _, runner = pop_flag(list(beam_args), "--runner")
    # a Dask cluster's workers read and write by path: this machine's, or a shared
    # filesystem's (docs/dask.md)
    if runner and runner not in LOCAL_RUNNERS and not is_dask_runner(list(beam_args)):
        # the workers read the sources and write the stages' data: neither can be local
        if not cfg.data_output or "://" not in cfg.data_output:
            raise UsageError(f"--runner {runner}: give data_output (or --data-output), a "
                             f"gs:// prefix where the Beam stages write; the run directory "
                             f"itself stays on this machine")
        if cfg.demo:
            raise UsageError(f"--runner {runner}: the demo corpus is on this machine; copy "
                             f"curation/demo/*.jsonl.gz to a bucket and name it in sources:")
        local = [p for s in cfg.sources for p in s.input if "://" not in p]
        if local:
            raise UsageError(f"--runner {runner}: the workers cannot read local sources "
                             f"({local[0]}{', ...' if len(local) > 1 else ''}); name them by "
                             f"gs:// path")
    if cfg.output is None:
        raise ConfigError("give the run directory: output: in the config, or --output")
    if "://" in cfg.output:
        raise UsageError(f"the run directory must be a local path, got {cfg.output}")
    own = progress is None
    progress = progress or Progress()
    try:
        from curation.outputs import OutputLock
        with OutputLock(str(cfg.output), "run", log=progress.log):   # one curate run per directory
            return Job(cfg, beam_args, config_path=config_path, progress=progress,
                       base_url=base_url, allow_damaged=allow_damaged).execute()
    finally:
        if own:
            progress.close()
