"""``--runner dask``: our pipelines on a Dask cluster (docs/dask.md).

Beam's own DaskRunner (apache_beam.runners.dask.dask_runner, Beam 2.77) loses data with
exit 0 on our graphs: every output of a multi-output ParDo reaches the consumers of each
of its outputs, only the last branch of a pipeline with several sinks runs, outputs of
``finish_bundle`` are dropped, and metrics raise NotImplementedError (reproductions in
docs/dask.md). This runner keeps Beam's options, overrides and DoFn invoker and replaces
the translation to Dask bags:

- a ParDo's partition becomes one bundle whose outputs are kept per tag, with the metric
  updates of the bundle beside them; each consumer selects its tag;
- every ParDo and every unconsumed collection is computed, and nothing but metrics
  comes back to this process;
- GroupByKey is one all-to-all exchange of the (key, value) pairs into a fixed number
  of partitions, split by a CRC of the pickled key (the same on every worker);
- side inputs are graph dependencies computed once, not a nested compute;
- a DoFn is set up once per worker and run, not once per partition.

Only the global window is supported: a pipeline with other windowing is refused.
Before any work is sent the workers' software is compared with this process's, and
a run whose cluster has no worker for --dask_worker_wait seconds fails rather than
waiting forever (Dask redoes a dead worker's work while others remain).
"""
from __future__ import annotations

import argparse
import atexit
import collections
import hashlib
import logging
import pickle
import threading
import uuid
import zlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.errors import ClusterError

_LOG = logging.getLogger(__name__)


class LocalDaskOptions(PipelineOptions):
    """How long a run waits for workers, and the cluster a run without
    --dask_client_address starts for itself."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dask_worker_wait", type=float, default=300,
            help="seconds a run waits while its cluster has no worker (at the start, or "
                 "after every worker died) before it fails (default 300)")
        parser.add_argument(
            "--dask_local_workers", type=int, default=None,
            help="worker processes of the local Dask cluster started when no "
                 "--dask_client_address is given (default: one per core)")
        parser.add_argument(
            "--dask_local_memory_limit", default="auto",
            help="memory limit of each local worker (Dask's memory_limit: bytes, '4GiB', "
                 "or auto: the machine's memory shared among the workers)")


# --- in the workers -------------------------------------------------------------------

from apache_beam.runners.common import Receiver as _BeamReceiver


class _Receiver(_BeamReceiver):
    """Collects a bundle's outputs of one tag (values without their global window)."""

    def __init__(self, out: dict, tag):
        self.out, self.tag = out, tag

    def receive(self, windowed_value) -> None:
        self.out.setdefault(self.tag, []).append(windowed_value.value)


class _Receivers(dict):
    def __init__(self):
        super().__init__()
        self.out: dict = {}

    def __missing__(self, tag):
        r = self[tag] = _Receiver(self.out, tag)
        return r


class _Prepared:
    """A DoFn set up on this worker, with the receivers its bundles fill."""

    def __init__(self, spec: dict, side_values: list):
        from apache_beam.runners.common import (DoFnContext, DoFnInvoker, DoFnSignature,
                                                _OutputHandler)
        from apache_beam.transforms.sideinputs import SideInputMap
        from apache_beam.transforms.window import GlobalWindows
        self.label = spec["label"]
        self.receivers = _Receivers()
        side_inputs = [SideInputMap(view_type, view_options, [_windowed(v) for v in values])
                       for (view_type, view_options), values in zip(spec["side_views"], side_values)]
        handler = _OutputHandler(window_fn=GlobalWindows(), main_receivers=self.receivers[None],
                                 tagged_receivers=self.receivers, per_element_output_counter=None,
                                 output_batch_converter=None, process_yields_batches=False,
                                 process_batch_yields_elements=False)
        self.invoker = DoFnInvoker.create_invoker(
            DoFnSignature(spec["fn"]), handler, context=DoFnContext(self.label, state=None),
            side_inputs=side_inputs, input_args=list(spec["args"]), input_kwargs=spec["kwargs"],
            user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
        self.invoker.invoke_setup()
        self.lock = threading.Lock()   # one bundle at a time on a multi-threaded worker

    def teardown(self) -> None:
        try:
            self.invoker.invoke_teardown()
        except Exception:   # noqa: BLE001 - teardown is best effort, as on every runner
            _LOG.warning("teardown of %s failed", self.label, exc_info=True)


_PREPARED: "collections.OrderedDict[tuple, _Prepared]" = collections.OrderedDict()
_PREPARED_LOCK = threading.Lock()
_PREPARED_MAX = 64


_GLOBAL = (GlobalWindow(),)


def _windowed(value):
    return WindowedValue(value, MIN_TIMESTAMP, _GLOBAL)


def _prepared(run_id: str, digest: str, blob: bytes, side_values: list) -> _Prepared:
    key = (run_id, digest)
    with _PREPARED_LOCK:
        got = _PREPARED.get(key)
        if got is not None:
            _PREPARED.move_to_end(key)
            return got
    from apache_beam.internal import pickler
    got = _Prepared(pickler.loads(blob), side_values)
    with _PREPARED_LOCK:
        _PREPARED[key] = got
        while len(_PREPARED) > _PREPARED_MAX:
            _PREPARED.popitem(last=False)[1].teardown()
    return got


def forget_run(run_id: str) -> int:
    """Tear down this worker's DoFns of a finished run (called on every worker)."""
    with _PREPARED_LOCK:
        keys = [k for k in _PREPARED if k[0] == run_id]
        gone = [_PREPARED.pop(k) for k in keys]
    for p in gone:
        p.teardown()
    return len(gone)


def _run_bundle(items, run_id: str, digest: str, blob, *side_values):
    """One partition through one ParDo: [(outputs by tag, metric updates)]."""
    from apache_beam.metrics.execution import MetricsContainer
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils import counters
    prepared = _prepared(run_id, digest, blob, list(side_values))
    with prepared.lock:
        container = MetricsContainer(prepared.label)
        sampler = statesampler.StateSampler("dask", counters.CounterFactory())
        before = statesampler.get_current_tracker()
        statesampler.set_current_tracker(sampler)
        try:
            with sampler.scoped_state(prepared.label, "process", metrics_container=container):
                prepared.receivers.out = out = {}
                for r in prepared.receivers.values():
                    r.out = out
                inv = prepared.invoker
                inv.invoke_start_bundle()
                for item in items:
                    inv.invoke_process(_windowed(item))
                inv.invoke_finish_bundle()
        finally:
            statesampler.set_current_tracker(before)
    return [(out, _plain_metrics(container))]


def _plain_metrics(container) -> dict:
    """A bundle's metric updates as plain tuples, for the trip back."""
    cum = container.get_cumulative()
    return {
        "counters": [(k.metric.namespace, k.metric.name, int(v)) for k, v in cum.counters.items()],
        "distributions": [(k.metric.namespace, k.metric.name, (d.sum, d.count, d.min, d.max))
                          for k, d in cum.distributions.items()],
    }


def _select(part, tag):
    out = []
    for outputs, _ in part:
        out.extend(outputs.get(tag, ()))
    return out


def _metrics_of(part, label):
    return [(label, m) for _, m in part]


def _drain(part):
    for _ in part:
        pass
    return []


def _concat(parts):
    return [x for part in parts for x in part]


def _bucket(key, n: int) -> int:
    # the same on every worker (str's hash() is salted per process)
    return zlib.crc32(pickle.dumps(key, protocol=4)) % n


def _split(part, n: int) -> dict:
    out: dict = {}
    for k, v in part:
        out.setdefault(_bucket(k, n), []).append((k, v))
    return out


def _join(*pieces) -> list:
    groups: dict = {}
    for piece in pieces:
        for k, v in piece:
            groups.setdefault(k, []).append(v)
    return list(groups.items())


def _group_by_key(bag, n: int):
    """GroupByKey as one all-to-all exchange into n partitions: every input partition
    split by a hash of the key, every output partition joining its bucket of each."""
    import dask.bag as db
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
    token = tokenize(bag.name, n)
    split, piece, join = f"gbk-split-{token}", f"gbk-piece-{token}", f"gbk-join-{token}"
    dsk = {}
    for i in range(bag.npartitions):
        dsk[(split, i)] = (_split, (bag.name, i), n)
        for j in range(n):
            dsk[(piece, i, j)] = (dict.get, (split, i), j, [])
    for j in range(n):
        dsk[(join, j)] = (_join, *[(piece, i, j) for i in range(bag.npartitions)])
    graph = HighLevelGraph.from_collections(join, dsk, dependencies=[bag])
    return db.Bag(graph, join, n)


# --- in this process ------------------------------------------------------------------

class DaskMetrics:
    """Beam's MetricResults over the updates the bundles brought back (each partition's
    result counted once: a recomputed partition replaces the lost one)."""

    def __init__(self, results):
        from apache_beam.metrics.cells import DistributionData
        from apache_beam.metrics.execution import MetricKey, MetricUpdates
        from apache_beam.metrics.metricbase import MetricName
        from apache_beam.runners.direct.direct_metrics import DirectMetrics
        self._direct = DirectMetrics()
        for i, (label, m) in enumerate(results):
            updates = MetricUpdates(
                counters={MetricKey(label, MetricName(ns, n)): v for ns, n, v in m["counters"]},
                distributions={MetricKey(label, MetricName(ns, n)): DistributionData(*d)
                               for ns, n, d in m["distributions"]})
            self._direct.commit_physical(i, updates)
            self._direct.commit_logical(i, updates)

    def query(self, filter=None):
        return self._direct.query(filter)


class DaskResult(PipelineResult):
    def __init__(self, client, cluster, futures, metric_futures, run_id: str, worker_wait: float):
        super().__init__(PipelineState.RUNNING)
        self.client, self.cluster = client, cluster
        self.futures, self.metric_futures, self.run_id = futures, metric_futures, run_id
        self.worker_wait = worker_wait
        self._metrics = None

    def _wait(self) -> None:
        """Until every future is done; a task's error is raised here. Dask redoes the
        work of a worker that dies, but with none left the tasks would wait forever."""
        import time
        import dask.distributed as ddist
        pending, alone_since = set(self.futures) | set(self.metric_futures), None
        while pending:
            try:
                done, pending = ddist.wait(pending, timeout=2, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = ()
            for f in done:
                if f.status == "error":
                    try:
                        f.result()
                    except ddist.KilledWorker as e:
                        raise ClusterError(
                            f"--runner dask: {e} (a task whose workers die that many times "
                            f"is given up: Dask's distributed.scheduler.allowed-failures); "
                            f"nothing of this run counts as written") from e
            if not pending or self.client.nthreads():
                alone_since = None
                continue
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > self.worker_wait:
                raise ClusterError(
                    f"--runner dask: the cluster at {self.client.scheduler.address} has had no "
                    f"worker for {self.worker_wait:g} s (--dask_worker_wait) with "
                    f"{len(pending)} results outstanding; nothing of this run counts as "
                    f"written")

    def wait_until_finish(self, duration=None):
        if self._state in (PipelineState.DONE, PipelineState.FAILED):
            return self._state
        try:
            self._wait()
            self._metrics = DaskMetrics(r for f in self.metric_futures for r in f.result())
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self._close()
        return self._state

    def _close(self) -> None:
        try:
            self.client.run(forget_run, self.run_id)
        except Exception:   # noqa: BLE001 - workers that are gone have nothing to tear down
            pass
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        _OPEN.discard(self)

    def cancel(self):
        self.client.cancel(self.futures + self.metric_futures)
        self._close()
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self):
        if self._metrics is None:
            raise RuntimeError("metrics are known once wait_until_finish() has returned DONE")
        return self._metrics


_OPEN: set = set()


@atexit.register
def _close_open() -> None:
    for r in list(_OPEN):
        try:
            r._close()
        except Exception:   # noqa: BLE001
            pass


class _Translator(beam.pipeline.PipelineVisitor):
    def __init__(self, run_id: str, bag_kwargs: dict, shuffle_partitions: int):
        self.run_id, self.bag_kwargs = run_id, bag_kwargs
        self.shuffle_partitions = shuffle_partitions
        self.raw: dict = {}          # ParDo node -> bag of bundles
        self.bags: dict = {}         # PCollection -> bag of its elements
        self.consumed: set = set()
        self.metric_bags: list = []

    def bag(self, pcoll):
        self.consumed.add(pcoll)
        return self.bags[pcoll]

    def visit_transform(self, node) -> None:
        from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, _Reshuffle
        t = node.transform
        for pc in node.outputs.values():
            _check_windowing(pc, node)
        if isinstance(t, _Create):
            self._out(node, self._create(list(t.values)))
        elif isinstance(t, beam.ParDo):
            self._pardo(node)
        elif isinstance(t, _GroupByKeyOnly):
            (pc,) = node.main_inputs.values()
            self._out(node, _group_by_key(self.bag(pc), self.shuffle_partitions))
        elif isinstance(t, _Flatten):
            import dask.bag as db
            bags = [self.bag(pc) for pc in node.main_inputs.values()]
            self._out(node, db.concat(bags) if bags else self._create([]))
        elif isinstance(t, _Reshuffle):
            (pc,) = node.main_inputs.values()
            self._out(node, self.bag(pc))
        else:
            raise NotImplementedError(
                f"--runner dask cannot run {node.full_label} ({type(t).__name__}); "
                f"docs/dask.md lists what it runs")

    def _out(self, node, bag) -> None:
        (pc,) = node.outputs.values()
        self.bags[pc] = bag

    def _create(self, values: list):
        import dask.bag as db
        n = self.bag_kwargs.get("npartitions")
        size = self.bag_kwargs.get("partition_size")
        if not values:
            return db.from_sequence([], npartitions=1)
        if size:
            return db.from_sequence(values, partition_size=size)
        # one partition per element: our Creates list work items (files, LSH partitions)
        return db.from_sequence(values, npartitions=min(len(values), n or 4096))

    def _pardo(self, node) -> None:
        import dask
        from apache_beam.internal import pickler
        t = node.transform
        (main,) = node.main_inputs.values()
        args, kwargs = t.raw_side_inputs
        spec = {"label": node.full_label, "fn": t.fn, "args": args, "kwargs": kwargs,
                "side_views": [(type(si), si._view_options()) for si in node.side_inputs]}
        blob = pickler.dumps(spec)
        digest = hashlib.sha256(blob).hexdigest()
        # in the graph once, fetched once per worker
        blob_d = dask.delayed(blob, name=f"dofn-{digest[:16]}-{self.run_id}")
        sides = [_whole(self.bag(si.pvalue)) for si in node.side_inputs]
        raw = self.bag(main).map_partitions(_run_bundle, self.run_id, digest, blob_d, *sides)
        self.raw[node] = raw
        self.metric_bags.append(raw.map_partitions(_metrics_of, node.full_label))
        for tag, pc in node.outputs.items():
            self.bags[pc] = raw.map_partitions(_select, tag)

    def targets(self) -> tuple[list, list]:
        """What to compute: every unconsumed collection, drained where it lies; and every
        ParDo's metric updates (which also runs each ParDo, consumed or not)."""
        leaves = [bag.map_partitions(_drain) for pc, bag in self.bags.items() if pc not in self.consumed]
        return leaves, self.metric_bags


def _whole(bag):
    """A bag as one list, one task (a side input: computed once, fetched by each worker)."""
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph
    name = f"side-{tokenize(bag.name)}"
    dsk = {name: (_concat, [(bag.name, i) for i in range(bag.npartitions)])}
    return Delayed(name, HighLevelGraph.from_collections(name, dsk, dependencies=[bag]))


def _check_windowing(pc, node) -> None:
    from apache_beam.transforms.window import GlobalWindows
    windowing = getattr(pc, "windowing", None)
    if windowing is not None and not isinstance(windowing.windowfn, GlobalWindows):
        raise NotImplementedError(f"--runner dask runs the global window only; "
                                  f"{node.full_label} is windowed by {windowing.windowfn}")


def _overrides():
    from apache_beam.pipeline import PTransformOverride
    from apache_beam.runners.dask.overrides import _GroupByKeyOnly, dask_overrides

    class GroupByKeyOverride(PTransformOverride):
        def matches(self, applied) -> bool:
            return applied.transform.__class__ == beam.GroupByKey

        def get_replacement_transform_for_applied_ptransform(self, applied):
            return _GroupByKeyOnly()

    keep = [o for o in dask_overrides() if type(o).__name__ != "GroupByKeyOverride"]
    return [GroupByKeyOverride(), *keep]


class DaskRunner(BeamDaskRunner):
    """Beam's DaskRunner with the translation above (docs/dask.md)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist
        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        local = options.view_as(LocalDaskOptions)
        run_id = uuid.uuid4().hex[:12]
        cluster = None
        if not dask_options.get("address") and not dask_options.get("scheduler_file"):
            cluster = start_local_cluster(local.dask_local_workers, local.dask_local_memory_limit)
            dask_options["address"] = cluster
        client = ddist.Client(**dask_options)
        result = None
        try:
            wait_for_workers(client, local.dask_worker_wait)
            check_workers(client)
            # shuffles into as many partitions as --dask_npartitions, or two per worker thread
            threads = sum(client.nthreads().values()) or 1
            pipeline.replace_all(_overrides())
            translator = _Translator(run_id, bag_kwargs, bag_kwargs.get("npartitions") or 2 * threads)
            pipeline.visit(translator)
            leaves, metric_bags = translator.targets()
            # one submission: the branches share their tasks
            got = client.compute([*leaves, *metric_bags])
            futures, metric_futures = got[:len(leaves)], got[len(leaves):]
            result = DaskResult(client, cluster, futures, metric_futures, run_id, local.dask_worker_wait)
            _OPEN.add(result)
        finally:
            if result is None:
                client.close()
                if cluster is not None:
                    cluster.close()
        return result


def software() -> dict[str, str]:
    """What must be the same on the client and every worker: DoFns travel pickled."""
    import platform
    from importlib.metadata import version
    out = {"python": ".".join(platform.python_version_tuple()[:2])}
    for dist in ("curation", "apache-beam", "dask", "distributed", "cloudpickle"):
        try:
            out[dist] = version(dist)
        except Exception:   # noqa: BLE001 - absent on that side: named as such
            out[dist] = "not installed"
    return out


def wait_for_workers(client, seconds: float) -> None:
    """A scheduler whose workers have not joined yet (a batch queue) holds tasks forever."""
    if client.nthreads():
        return
    try:
        client.wait_for_workers(1, timeout=seconds)
    except TimeoutError:
        raise ClusterError(f"--runner dask: no worker joined the scheduler "
                           f"{client.scheduler.address} within {seconds:g} s "
                           f"(--dask_worker_wait)") from None


def check_workers(client) -> None:
    """Refuse a cluster whose workers run other versions than this process, before any
    work is sent (the alternative is an unpickling error deep in a task)."""
    here = software()
    try:
        theirs = client.run(software)
    except Exception as e:   # noqa: BLE001 - e.g. curation missing there: unpickling fails
        raise ClusterError(f"--runner dask: the workers cannot run curation's code "
                           f"({type(e).__name__}: {e}); install curation[dask] on every "
                           f"worker (docs/dask.md, 'Workers')") from e
    for worker, there in sorted(theirs.items()):
        diff = {k: (v, there.get(k)) for k, v in here.items() if there.get(k) != v}
        if diff:
            what = ", ".join(f"{k} {a} here, {b} there" for k, (a, b) in sorted(diff.items()))
            raise ClusterError(f"--runner dask: worker {worker} runs other software than this "
                               f"process ({what}); install the same versions on every worker "
                               f"(docs/dask.md, 'Workers')")


def start_local_cluster(workers: int | None, memory_limit="auto"):
    """Worker processes of one thread each on this machine (our DoFns hold the GIL)."""
    import os
    from dask.distributed import LocalCluster
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    n = workers or os.cpu_count() or 1
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, memory_limit=memory_limit)
