"""What a billion documents cost on Dataflow: each Beam stage measured on the local
runner, per document, and multiplied out with Dataflow's price list.

    nice -n 10 python benchmarks/bench_cost_model.py benchmarks/data/web_100k \\
        [more corpus directories or globs ...] [--stages dedup,filter,score] [--workers 2]

Each corpus runs `curate dedup` on it, `curate filter --preset fineweb` on dedup's kept
documents and `curate score` on filter's (a fastText model trained here from heuristic
labels of the demo corpus; its quality does not matter), in this process through
`pipelines.cli.main`, so that the local FnApiRunner can be watched. Per stage:

* shuffled bytes (measured): Beam's own per-PCollection element counts and sampled
  encoded sizes (monitoring infos beam:metric:element_count:v1 and
  beam:metric:sampled_byte_size:v1) for the input of every GroupByKey the runner
  executed, found from the executed graph (CoGroupByKey, Reshuffle and lifted
  combiners included), so it follows any rewrite of a pipeline;
* CPU seconds (measured): user + system of the whole process tree while the pipeline
  ran (curation/memwatch.py), split into Beam's worker processes and the runner (this
  process: the local runner's controller, which holds the shuffles in memory; on
  Dataflow that is the shuffle service's work, billed by the byte);
* bytes written (measured): the files in the stage's output directory afterwards;
* bytes read: the input files' sizes times the passes the stage makes over them
  (READ_PASSES, from the stage's design, not measured).

Then the projection to --documents (default 1e9) raw documents: worker-hours, shuffle
volume and dollars per stage at the prices in PRICES (us-central1; check them, see
docs/dataflow.md, "Cost model"). Results also go to OUT/cost_model.json.

    benchmarks/.venv-datatrove/bin/python benchmarks/bench_cost_model.py --datatrove-cluster 1000000

times datatrove's MinHash clustering stage, which runs as one task, on duplicate-pair
files shaped like its stage 2's for that many documents (datatrove_cluster_probe).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

GBK_URN = "beam:transform:group_by_key:v1"
FLATTEN_URN = "beam:transform:flatten:v1"
SINK_URN = "beam:runner:sink:v1"

# Passes each stage makes over its input files (not measured: the stages' design).
# dedup signs every file, then re-reads it to write the kept documents.
READ_PASSES = {"dedup": 2, "filter": 1, "score": 1}


# ---------------------------------------------------------------- prices (assumed)

@dataclass(frozen=True)
class Prices:
    """Dataflow batch prices, us-central1, as published on
    https://cloud.google.com/dataflow/pricing when last seen by the author (the list was
    unchanged from 2023 to 2025); this machine has no internet: check them."""
    region: str = "us-central1"
    as_of: str = "Dataflow price list as known in 2025 (not checked online)"
    vcpu_hour: float = 0.056            # batch worker, per vCPU-hour
    memory_gb_hour: float = 0.003557    # batch worker, per GB-hour
    pd_gb_hour: float = 0.000054        # standard persistent disk, per GB-hour
    shuffle_gb: float = 0.011           # Dataflow Shuffle (batch), per GB of data processed
    # per-job volume discounts on shuffle: (GB in the tier, share of the price charged)
    shuffle_tiers: tuple = ((250.0, 0.25), (4870.0, 0.5), (math.inf, 1.0))


@dataclass(frozen=True)
class Worker:
    """The worker assumed: n1-standard-4 (4 vCPU, 15 GB), 25 GB boot disk (Dataflow's
    batch default with Dataflow Shuffle)."""
    machine: str = "n1-standard-4"
    vcpus: int = 4
    memory_gb: float = 15.0
    disk_gb: float = 25.0


def shuffle_dollars(gb: float, prices: Prices) -> float:
    """Dollars for `gb` shuffled in one job, with the per-job volume tiers."""
    left, total = max(gb, 0.0), 0.0
    for size, share in prices.shuffle_tiers:
        part = min(left, size)
        total += part * prices.shuffle_gb * share
        left -= part
        if left <= 0:
            break
    return total


def project(per_doc: dict, documents: float, prices: Prices = Prices(), worker: Worker = Worker(),
            utilization: float = 1.0) -> dict:
    """One stage at `documents` raw documents from its per-raw-document figures
    (cpu_s, shuffle_bytes, read_bytes, written_bytes). Worker CPU is billed as
    provisioned vCPU time: measured CPU / utilization. GB are 2**30 bytes."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], not {utilization}")
    vcpu_h = per_doc["cpu_s"] * documents / 3600.0 / utilization
    worker_h = vcpu_h / worker.vcpus
    shuffle_gb = per_doc["shuffle_bytes"] * documents / 2**30
    dollars = {
        "vcpu": vcpu_h * prices.vcpu_hour,
        "memory": worker_h * worker.memory_gb * prices.memory_gb_hour,
        "disk": worker_h * worker.disk_gb * prices.pd_gb_hour,
        "shuffle": shuffle_dollars(shuffle_gb, prices),
    }
    dollars["total"] = sum(dollars.values())
    return {"vcpu_hours": vcpu_h, "worker_hours": worker_h, "shuffle_gb": shuffle_gb,
            "read_gb": per_doc["read_bytes"] * documents / 2**30,
            "written_gb": per_doc["written_bytes"] * documents / 2**30,
            "dollars": dollars}


# ------------------------------------------------- shuffles of an executed Beam graph

def shuffle_inputs(stages, components) -> dict[str, list[str]]:
    """GroupByKey name -> the PCollections written into it, for every GroupByKey the
    FnApiRunner executed (its stages hold a '<name>/Write' sink per GroupByKey; a lifted
    combiner's 'Group' counts, the GroupByKey it replaced does not)."""
    gbks = {t.unique_name for t in components.transforms.values() if t.spec.urn == GBK_URN}
    out: dict[str, list[str]] = {}
    for stage in stages:
        for t in stage.transforms:
            if t.spec.urn == SINK_URN and t.unique_name.endswith("/Write"):
                name = t.unique_name[: -len("/Write")]
                if name in gbks:
                    out.setdefault(name, []).extend(t.inputs.values())
    return out


def pcollection_sizes(infos_by_stage) -> dict[str, tuple[int, float]]:
    """PCollection id -> (elements, estimated encoded bytes) from the runner's
    monitoring infos: element count times the mean of the sampled sizes. A PCollection
    that crosses between two stages is reported by both: the larger report is kept."""
    from apache_beam.metrics import monitoring_infos as mi
    best: dict[str, tuple[int, float]] = {}
    for stage, infos in infos_by_stage.items():
        if not stage:   # '' holds the pipeline-wide metrics
            continue
        counts, dists = {}, {}
        for m in infos:
            pc = m.labels.get("PCOLLECTION")
            if pc is None:
                continue
            if m.urn == mi.ELEMENT_COUNT_URN:
                counts[pc] = mi.extract_counter_value(m)
            elif m.urn == mi.SAMPLED_BYTE_SIZE_URN:
                count, total = mi.extract_distribution(m)[:2]
                dists[pc] = total / count if count else 0.0
        for pc, n in counts.items():
            size = (n, n * dists.get(pc, 0.0))
            if pc not in best or size[0] > best[pc][0]:
                best[pc] = size
    return best


def measured_shuffles(stages, components, sizes) -> list[dict]:
    """Each executed GroupByKey with the elements and bytes written into it. A
    Flatten's output (CoGroupByKey's) is sized as the sum of its inputs: Beam samples
    the first elements of a bundle most, so one mean over a stream of unlike inputs read
    one after the other is biased towards the first input."""
    producers = {pc: t for t in components.transforms.values() for pc in t.outputs.values()}

    def size(pc, depth=0):
        t = producers.get(pc)
        if t is not None and t.spec.urn == FLATTEN_URN and depth < 10:
            parts = [size(i, depth + 1) for i in t.inputs.values()]
            return sum(p[0] for p in parts), sum(p[1] for p in parts)
        return sizes.get(pc, (0, 0.0))

    rows = []
    for name, pcs in sorted(shuffle_inputs(stages, components).items()):
        got = [size(pc) for pc in pcs]
        rows.append({"shuffle": name, "elements": sum(g[0] for g in got),
                     "bytes": sum(g[1] for g in got)})
    return rows


class RunnerWatch:
    """While active, every FnApiRunner pipeline in this process is recorded: its
    executed graph, its monitoring infos and the CPU seconds of the process tree
    (`meter`: a curation.memwatch.TreeMemory) and of this process while it ran."""

    def __init__(self):
        self.runs: list[dict] = []
        self.meter = None

    @contextlib.contextmanager
    def active(self):
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        cls = fn_runner.FnApiRunner
        orig_create, orig_run = cls.create_stages, cls.run_pipeline
        watch = self

        def create_stages(runner, pipeline_proto):
            ctx, stages = orig_create(runner, pipeline_proto)
            runner._cost_model_graph = (ctx.components, stages)
            return ctx, stages

        def run_pipeline(runner, pipeline, options):
            meter = watch.meter
            meter.sample()
            tree0, self0, t0 = meter.cpu_s, _self_cpu(), time.perf_counter()
            result = orig_run(runner, pipeline, options)
            meter.sample()
            components, stages = runner._cost_model_graph
            sizes = pcollection_sizes(result._monitoring_infos_by_stage)
            tree_cpu, runner_cpu = meter.cpu_s - tree0, _self_cpu() - self0
            watch.runs.append({"wall_s": time.perf_counter() - t0, "cpu_s": tree_cpu,
                               "runner_cpu_s": runner_cpu,
                               "worker_cpu_s": max(tree_cpu - runner_cpu, 0.0),
                               "shuffles": measured_shuffles(stages, components, sizes)})
            return result

        cls.create_stages, cls.run_pipeline = create_stages, run_pipeline
        try:
            yield self
        finally:
            cls.create_stages, cls.run_pipeline = orig_create, orig_run


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------ running stages

def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _input_pattern(corpus: str) -> str:
    if os.path.isdir(corpus):
        for ext in ("*.jsonl.gz", "*.parquet", "*.jsonl", "*.jsonl.zst"):
            if glob.glob(os.path.join(corpus, ext)):
                return os.path.join(corpus, ext)
        raise SystemExit(f"bench_cost_model: no JSONL or Parquet files in {corpus}")
    return corpus


def ensure_model(out: str) -> str:
    """The score stage's model: heuristic labels of the demo corpus, trained here once."""
    from pipelines.cli import main as curate
    model = os.path.join(out, "model")
    if not os.path.exists(os.path.join(model, "metrics.json")):
        labels = os.path.join(out, "labels")
        for argv in (["label", "--demo", "--output", labels, "--labeler", "heuristic", "--sample", "800"],
                     ["train-classifier", "--labels", os.path.join(labels, "labels.jsonl"),
                      "--output", model]):
            if curate(argv) != 0:
                raise SystemExit(f"bench_cost_model: curate {argv[0]} failed")
    return model


def run_stage(stage: str, inputs: str, out: str, beam: list[str], model: str | None,
              watch: RunnerWatch) -> dict:
    from curation.memwatch import TreeMemory
    from pipelines.cli import main as curate
    extra = {"dedup": [], "filter": ["--preset", "fineweb"],
             "score": ["--model", model or "", "--min-score", "0.5"]}[stage]
    argv = [stage, "--input", inputs, "--output", out, "--overwrite", *extra, *beam]
    first = len(watch.runs)
    with TreeMemory(interval=0.25) as meter:
        watch.meter = meter
        t0 = time.perf_counter()
        rc = curate(argv)
        wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"bench_cost_model: curate {' '.join(argv)} exited {rc}")
    runs = watch.runs[first:]
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    read = sum(f.get("bytes") or 0 for f in manifest["parameters"]["files"]) * READ_PASSES[stage]
    shuffles = [s for r in runs for s in r["shuffles"]]
    return {
        "stage": stage, "argv": ["curate", *argv],
        "documents_in": manifest["counts"]["input"], "kept": manifest["counts"]["kept"],
        "wall_s": wall, "pipeline_wall_s": sum(r["wall_s"] for r in runs),
        "cpu_s": sum(r["cpu_s"] for r in runs), "worker_cpu_s": sum(r["worker_cpu_s"] for r in runs),
        "runner_cpu_s": sum(r["runner_cpu_s"] for r in runs),
        "peak_pss_mib": round(meter.peak_pss / 2**20, 1),
        "read_bytes": read, "read_passes": READ_PASSES[stage],
        "written_bytes": _dir_bytes(out),
        # dedup's work folder (removed on success): object storage, not shuffle
        "work_written_bytes": manifest.get("counters", {}).get("work_bytes_written", 0),
        "work_read_bytes": manifest.get("counters", {}).get("work_bytes_read", 0),
        "shuffle_bytes": sum(s["bytes"] for s in shuffles),
        "shuffle_elements": sum(s["elements"] for s in shuffles),
        "shuffles": shuffles,
    }


def per_raw_doc(row: dict, raw_docs: int, cpu: str = "worker_cpu_s") -> dict:
    """A stage's totals per raw corpus document (later stages see fewer documents)."""
    return {"cpu_s": row[cpu] / raw_docs, "shuffle_bytes": row["shuffle_bytes"] / raw_docs,
            "read_bytes": row["read_bytes"] / raw_docs, "written_bytes": row["written_bytes"] / raw_docs}


def datatrove_cluster_probe(documents: int, work: str, dup_share: float = 0.15, buckets: int = 14) -> dict:
    """Time datatrove's MinHash stage 3 (MinhashDedupCluster, one task by design: it
    asserts world_size == 1) on duplicate-pair files shaped like its stage 2's for a
    corpus of `documents` with `dup_share` near duplicates: every bucket finds the same
    pairs (a worst case for the work, not for the count of nodes). Run with datatrove's
    interpreter (benchmarks/.venv-datatrove/bin/python)."""
    import random
    import shutil
    import struct

    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupCluster
    sys.path.insert(0, HERE)
    from memwatch import TreeMemory
    shutil.rmtree(work, ignore_errors=True)
    dups, out = os.path.join(work, "buckets"), os.path.join(work, "remove_ids")
    os.makedirs(dups)
    files, rng = 16, random.Random(1)
    per_file = documents // files
    pairs = []
    for i in range(int(documents * dup_share)):   # (file, doc) of an original -> of a copy
        a, b = rng.randrange(documents), rng.randrange(documents)
        pairs.append((a // per_file % files, a % per_file, b // per_file % files, b % per_file))
    pairs = sorted(tuple(sorted([(p[0], p[1]), (p[2], p[3])])) for p in pairs)
    packed = b"".join(struct.pack("<4I", a[0], a[1], b[0], b[1]) for a, b in pairs)
    for bucket in range(buckets):
        with open(os.path.join(dups, f"{bucket:05d}_00.dups"), "wb") as f:
            f.write(packed)
    step = MinhashDedupCluster(input_folder=dups, output_folder=out, config=MinhashConfig(num_buckets=buckets))
    with TreeMemory(interval=0.05) as mem:
        c0, t0 = _self_cpu(), time.perf_counter()
        step.run(world_size=1)
        wall, cpu = time.perf_counter() - t0, _self_cpu() - c0
    return {"documents": documents, "pairs_per_bucket": len(pairs), "buckets": buckets,
            "union_operations": len(pairs) * buckets, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_pss_mib": round(mem.peak_pss / 2**20, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpora", nargs="*", help="corpus directories (make_web_corpus.py) or input globs")
    ap.add_argument("--datatrove-cluster", type=int, metavar="DOCS",
                    help="instead: time datatrove's single-task clustering stage for DOCS documents "
                         "(run with benchmarks/.venv-datatrove/bin/python)")
    ap.add_argument("--stages", default="dedup,filter,score",
                    help="comma-separated, in pipeline order; each reads the previous one's documents")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="--direct_num_workers")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "cost_model"))
    ap.add_argument("--documents", type=float, default=1e9, help="raw documents to project to")
    ap.add_argument("--utilization", type=float, default=1.0,
                    help="share of provisioned vCPU time doing work on Dataflow (1.0: a floor on cost)")
    ap.add_argument("--cpu", choices=("worker", "tree"), default="worker",
                    help="CPU billed as Dataflow worker time: Beam's workers only, or with the local runner")
    ap.add_argument("--verify-by", choices=("shuffle", "reads"), default="shuffle",
                    help="dedup's verification: through the shuffle, as on gs:// (default: the "
                         "graph Dataflow would run), or by ranged reads, as on a local disk")
    a = ap.parse_args(argv)
    if a.datatrove_cluster:
        print(json.dumps(datatrove_cluster_probe(a.datatrove_cluster, os.path.join(a.out, "datatrove_cluster"))))
        return 0
    if not a.corpora:
        ap.error("name at least one corpus")
    stages = [s for s in a.stages.split(",") if s]
    unknown = [s for s in stages if s not in READ_PASSES]
    if unknown:
        ap.error(f"unknown stage {unknown[0]!r} (known: {', '.join(READ_PASSES)})")
    os.makedirs(a.out, exist_ok=True)
    sys.path.insert(0, REPO)
    import pipelines.dedup
    pipelines.dedup.VERIFY_BY = a.verify_by   # the graph is built in this process
    beam = [f"--direct_num_workers={a.workers}"]
    model = ensure_model(a.out) if "score" in stages else None
    prices, worker = Prices(), Worker()
    cpu_key = "worker_cpu_s" if a.cpu == "worker" else "cpu_s"
    watch = RunnerWatch()
    results = []
    with watch.active():
        for corpus in a.corpora:
            name = os.path.basename(os.path.normpath(corpus if os.path.isdir(corpus) else os.path.dirname(corpus)))
            inputs, rows = _input_pattern(corpus), []
            for stage in stages:
                out = os.path.join(a.out, f"{name}_{stage}")
                row = run_stage(stage, inputs, out, beam, model, watch)
                rows.append(row)
                inputs = os.path.join(out, "documents", "*")
            raw = rows[0]["documents_in"]
            for row in rows:
                row["per_raw_doc"] = per_raw_doc(row, raw, cpu_key)
                row["projection"] = project(row["per_raw_doc"], a.documents, prices, worker, a.utilization)
            total = {k: sum(r["projection"][k] for r in rows)
                     for k in ("vcpu_hours", "worker_hours", "shuffle_gb")}
            total["dollars"] = sum(r["projection"]["dollars"]["total"] for r in rows)
            results.append({"corpus": corpus, "raw_documents": raw, "stages": rows, "total": total})
            print_corpus(results[-1], a.documents, a.utilization)
    with open(os.path.join(a.out, "cost_model.json"), "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "argv": sys.argv, "workers": a.workers,
                   "verify_by": a.verify_by,
                   "cpu_billed": a.cpu, "utilization": a.utilization, "documents": a.documents,
                   "prices": asdict(prices), "worker": asdict(worker), "results": results},
                  f, indent=1, default=str)
    return 0


def print_corpus(res: dict, documents: float, utilization: float) -> None:
    raw = res["raw_documents"]
    print(f"\n{res['corpus']}: {raw:,} raw documents")
    print(f"{'stage':7s} {'docs in':>9s} {'read B/doc':>11s} {'shuffled B/doc':>15s} {'written B/doc':>14s} "
          f"{'CPU s/doc':>10s} {'workers':>9s} {'runner':>8s} {'wall s':>7s} {'peak PSS':>9s}")
    for r in res["stages"]:
        print(f"{r['stage']:7s} {r['documents_in']:>9,} {r['read_bytes'] / raw:>11,.0f} "
              f"{r['shuffle_bytes'] / raw:>15,.1f} {r['written_bytes'] / raw:>14,.0f} "
              f"{r['cpu_s'] / raw * 1e3:>8.3f}ms {r['worker_cpu_s'] / raw * 1e3:>7.3f}ms "
              f"{r['runner_cpu_s'] / raw * 1e3:>6.3f}ms {r['pipeline_wall_s']:>7.1f} {r['peak_pss_mib']:>7.0f}Mi")
        if r.get("work_written_bytes"):
            print(f"          work files (object storage, not shuffle): written "
                  f"{r['work_written_bytes'] / raw:,.1f} B/doc, read back {r['work_read_bytes'] / raw:,.1f} B/doc")
        for s in sorted(r["shuffles"], key=lambda s: -s["bytes"]):
            if s["bytes"] / raw >= 0.05:
                print(f"          shuffle {s['shuffle']}: {s['elements']:,} elements, "
                      f"{s['bytes'] / raw:,.1f} B/doc")
    print(f"projected to {documents:.3g} raw documents (utilization {utilization:.0%}):")
    for r in res["stages"]:
        p = r["projection"]
        d = p["dollars"]
        print(f"  {r['stage']:7s} {p['worker_hours']:>10,.0f} worker-h  {p['vcpu_hours']:>10,.0f} vCPU-h  "
              f"shuffle {p['shuffle_gb']:>9,.0f} GB  ${d['total']:>9,.0f} "
              f"(vCPU {d['vcpu']:,.0f}, memory {d['memory']:,.0f}, disk {d['disk']:,.0f}, "
              f"shuffle {d['shuffle']:,.0f})")
    t = res["total"]
    print(f"  {'total':7s} {t['worker_hours']:>10,.0f} worker-h  {t['vcpu_hours']:>10,.0f} vCPU-h  "
          f"shuffle {t['shuffle_gb']:>9,.0f} GB  ${t['dollars']:>9,.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
