"""The Dataflow job for `curate dedup`, built offline: no credentials, no network."""
import subprocess
import sys
import zipfile

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from curation.config import DedupConfig
from curation.demo import demo_glob
from pipelines.run_dedup import run_dedup

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, timeout=300)
    (whl,) = out.glob("curation-*.whl")
    return whl


def test_wheel_holds_packages_and_demo(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("curation/", "pipelines/", "classifiers/", "curation/minhash/", "curation/io/"):
        assert any(n.startswith(pkg) for n in names), pkg
    assert any(n.startswith("curation/demo/") and n.endswith(".jsonl.gz") for n in names)
    assert "curation/demo/NOTICE.md" in names


def test_dataflow_job_graph_offline(wheel, tmp_path):
    cfg = DedupConfig(inputs=[demo_glob()], output="gs://my-bucket-123/runs/dedup")
    beam_args = ["--runner", "DataflowRunner", "--project", "my-project-123",
                 "--region", "us-central1", "--temp_location", "gs://my-bucket-123/tmp",
                 "--extra_package", str(wheel), "--dry_run=True"]
    res = run_dedup(cfg, beam_args)
    assert res["status"] == "dry_run" and res["runner"] == "DataflowRunner"
    proto = res["job"].proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    # on gs:// verification takes two hops through the shuffle (no ranged read per candidate)
    for step in ("Files", "Sign", "Partitions", "GroupPartitions", "GroupCandidates", "FetchFirst",
                 "GroupBySecond", "Verify", "Components", "Components/R00LargeStar", "Components/R23SmallStar",
                 "Components/CheckConverged", "GroupByRootFile", "RootIds", "JoinFiles", "WriteShards"):
        assert step in names, step
    # the signing pass's output is a side input (what it wrote), never a shuffle's input
    sign = next(t for t in proto.components.transforms.values() if t.unique_name == "Sign")
    signed = set(sign.outputs.values())
    for t in proto.components.transforms.values():
        if t.spec.urn == "beam:transform:group_by_key:v1":
            assert not signed & set(t.inputs.values()), t.unique_name
    staged = []
    for env in proto.components.environments.values():
        for dep in env.dependencies:
            staged.append(beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                dep.role_payload).staged_name)
    assert wheel.name in staged
    # the job's options carry the pass-through flags unchanged
    opts = res["job"].options.get_all_options()
    assert opts["project"] == "my-project-123" and opts["region"] == "us-central1"


def test_dataflow_job_graph_with_dedup_indexes(wheel, tmp_path):
    idx = tmp_path / "idx"
    from curation.demo import DEMO_DIR
    assert run_dedup(DedupConfig(inputs=[str(DEMO_DIR / "books.jsonl.gz")], output=str(tmp_path / "first"),
                                 write_index=str(idx)),
                     ["--direct_running_mode=in_memory", "--direct_num_workers=1"])["status"] == "complete"
    cfg = DedupConfig(inputs=[demo_glob()], output="gs://my-bucket-123/runs/dedup2",
                      against=[str(idx)], write_index=str(idx))
    res = run_dedup(cfg, ["--runner", "DataflowRunner", "--project", "my-project-123",
                          "--region", "us-central1", "--temp_location", "gs://my-bucket-123/tmp",
                          "--extra_package", str(wheel), "--dry_run=True"])
    assert res["status"] == "dry_run"
    names = {t.unique_name for t in res["job"].proto_pipeline.components.transforms.values()}
    for step in ("GroupIndexCandidates", "VerifyIndex", "DropIndexed", "DropIndexed/JoinA", "DropIndexed/DropB", "JoinFiles",
                 "WriteShards", "IndexPartitions", "WriteIndexKeys"):
        assert step in names, step
    # a dry run writes nothing to the index
    assert [g["generation"] for g in __import__("json").loads((idx / "index.json").read_text())["generations"]] == [0]


def _staged(proto) -> list[str]:
    return [beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            for env in proto.components.environments.values() for dep in env.dependencies]


@pytest.mark.parametrize("sample", [None, 100])
def test_filter_dataflow_job_graph_offline(wheel, sample):
    from curation.config import FilterRunConfig
    from pipelines.run_filter import run_filter
    cfg = FilterRunConfig(inputs=[demo_glob()], output="gs://my-bucket-123/runs/filter",
                          preset="fineweb", removed_sample=sample)
    beam_args = ["--runner", "DataflowRunner", "--project", "my-project-123",
                 "--region", "us-central1", "--temp_location", "gs://my-bucket-123/tmp",
                 "--extra_package", str(wheel), "--no_save_main_session", "--dry_run=True"]
    res = run_filter(cfg, beam_args)
    assert res["status"] == "dry_run" and res["runner"] == "DataflowRunner"
    proto = res["job"].proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    steps = ["Files", "SpreadFiles", "FilterFiles", "AllCounts", "SumCounts", "WriteCounts"]
    sample_steps = ["FirstNPerRule", "WriteSample"]
    for step in steps + (sample_steps if sample else []):
        assert step in names, step
    if not sample:
        assert not any(n.startswith(tuple(sample_steps)) for n in names)
    # one read-filter-write step per file: no GroupByKey carries documents unless sampling
    gbks = [t.unique_name for t in proto.components.transforms.values()
            if t.spec.urn == "beam:transform:group_by_key:v1"]
    assert all(g.startswith(("Files/", "SpreadFiles/", "SumCounts/", "FirstNPerRule/")) for g in gbks), gbks
    assert any(g.startswith("FirstNPerRule/") for g in gbks) == bool(sample)
    assert wheel.name in _staged(proto)
    opts = res["job"].options.get_all_options()
    assert opts["project"] == "my-project-123" and opts["save_main_session"] is False
