"""The cost model's pure parts (benchmarks/bench_cost_model.py): the price arithmetic,
and the shuffle measurement on a real local Beam runner, whose answer is known."""
import importlib.util
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_cost_model", REPO / "benchmarks" / "bench_cost_model.py")
cm = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_cost_model", cm)   # dataclasses look their module up
_spec.loader.exec_module(cm)


def test_shuffle_dollars_applies_the_per_job_tiers():
    p = cm.Prices(shuffle_gb=0.01)
    assert cm.shuffle_dollars(0, p) == 0
    assert cm.shuffle_dollars(100, p) == pytest.approx(100 * 0.01 * 0.25)
    assert cm.shuffle_dollars(1000, p) == pytest.approx((250 * 0.25 + 750 * 0.5) * 0.01)
    assert cm.shuffle_dollars(10_000, p) == pytest.approx((250 * 0.25 + 4870 * 0.5 + 4880) * 0.01)


def test_project_multiplies_out_per_document_figures():
    per_doc = {"cpu_s": 3.6e-3, "shuffle_bytes": 2**30 / 1e9 * 5000, "read_bytes": 0.0, "written_bytes": 2**30 / 1e9}
    prices, worker = cm.Prices(), cm.Worker(vcpus=4, memory_gb=15, disk_gb=25)
    got = cm.project(per_doc, 1e9, prices, worker)
    assert got["vcpu_hours"] == pytest.approx(1000)
    assert got["worker_hours"] == pytest.approx(250)
    assert got["shuffle_gb"] == pytest.approx(5000) and got["written_gb"] == pytest.approx(1)
    d = got["dollars"]
    assert d["vcpu"] == pytest.approx(1000 * prices.vcpu_hour)
    assert d["memory"] == pytest.approx(250 * 15 * prices.memory_gb_hour)
    assert d["disk"] == pytest.approx(250 * 25 * prices.pd_gb_hour)
    assert d["shuffle"] == pytest.approx(cm.shuffle_dollars(5000, prices))
    assert d["total"] == pytest.approx(d["vcpu"] + d["memory"] + d["disk"] + d["shuffle"])
    # half the provisioned time idle: twice the vCPU-hours
    assert cm.project(per_doc, 1e9, prices, worker, utilization=0.5)["vcpu_hours"] == pytest.approx(2000)
    with pytest.raises(ValueError, match="utilization"):
        cm.project(per_doc, 1e9, prices, worker, utilization=0)


def test_shuffles_are_found_in_the_executed_graph_and_sized_by_beam():
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from curation.memwatch import TreeMemory

    watch = cm.RunnerWatch()
    with watch.active(), TreeMemory() as meter:
        watch.meter = meter
        with beam.Pipeline(runner=FnApiRunner()) as p:
            a = (p | "A" >> beam.Create(range(1000), reshuffle=False)
                 | "KA" >> beam.Map(lambda i: (i % 10, b"x" * 100)))
            b = (p | "B" >> beam.Create(range(500), reshuffle=False)
                 | "KB" >> beam.Map(lambda i: (i % 10, b"y" * 20)))
            _ = a | "G" >> beam.GroupByKey()
            _ = {"a": a, "b": b} | "CG" >> beam.CoGroupByKey()
            _ = b | "Len" >> beam.Map(lambda kv: (kv[0], len(kv[1]))) | "CPK" >> beam.CombinePerKey(sum)
            _ = a | "NoShuffle" >> beam.Map(lambda kv: kv[0])
    (run,) = watch.runs
    got = {s["shuffle"]: s for s in run["shuffles"]}
    assert set(got) == {"G", "CG/CoGroupByKeyImpl/GroupByKey", "CPK/Group"}   # the lifted combiner's
    assert got["G"]["elements"] == 1000
    assert 100 <= got["G"]["bytes"] / 1000 <= 140      # 100-byte values, a key and the window
    assert got["CG/CoGroupByKeyImpl/GroupByKey"]["elements"] == 1500
    cg_per_elem = got["CG/CoGroupByKeyImpl/GroupByKey"]["bytes"] / 1500
    assert (1000 * 100 + 500 * 20) / 1500 <= cg_per_elem <= (1000 * 100 + 500 * 20) / 1500 + 50
    # combined before the shuffle: at most one element per key and bundle, not 500
    assert 1 <= got["CPK/Group"]["elements"] <= 100
    assert run["cpu_s"] >= 0 and math.isfinite(run["cpu_s"])
