"""The Beam form of the star rounds (pipelines.dedup.ConnectedComponents) on random
graphs: the same labels as the in-memory driver, early exit once converged, and a
clear failure when the unrolled rounds are too few."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from curation.components import connected_components
from curation.documents import RECORD_BITS
from curation.exchange import unpack
from pipelines.dedup import ConnectedComponents, _edge_chunk

OPTS = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])


def _explode(kv):
    e = unpack(kv[1])
    return list(zip(e["a"].tolist(), e["b"].tolist()))


def _run(edges, max_rounds, want, partitions=4):
    """Run the transform; its (node, root) labels must be `want`'s, each exactly once
    (roots' own labels are added later, by RootIds)."""
    want = {n: r for n, r in want.items() if n != r}
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    half = len(a) // 2
    p = beam.Pipeline("FnApiRunner", options=OPTS)
    out = (p | beam.Create([_edge_chunk(a[:half], b[:half]), _edge_chunk(a[half:], b[half:])])
           | ConnectedComponents(max_rounds, partitions)
           | beam.FlatMap(_explode))
    assert_that(out, equal_to(sorted(want.items())))
    result = p.run()
    result.wait_until_finish()
    rows = result.metrics().query(MetricsFilter().with_name("cc_edge_rows_grouped"))["counters"]
    return sum(c.committed for c in rows)


@pytest.mark.parametrize("seed", range(4))
def test_components_equal_the_in_memory_driver(seed):
    rng = np.random.default_rng(seed)
    # ordinals spread over several files, like real ones
    nodes = (rng.integers(0, 5, 300) << RECORD_BITS) + rng.integers(0, 10**6, 300)
    edges = [(int(nodes[i]), int(nodes[j])) for i, j in rng.integers(0, 300, (260, 2)) if i != j]
    want, _ = connected_components(edges)
    _run(edges, 24, want)


def test_too_few_rounds_fail_the_run():
    chain = [(i, i + 1) for i in range(1, 40)]       # a path needs several rounds
    with pytest.raises(Exception, match="did not converge in 1 rounds"):
        _run(chain, 1, {i: 1 for i in range(1, 41)})
    # once a round changes nothing the edges leave as labels: rounds unrolled beyond
    # convergence group no edges at all
    assert _run(chain, 24, {i: 1 for i in range(1, 41)}) == _run(chain, 12, {i: 1 for i in range(1, 41)})
