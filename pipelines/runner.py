"""Runner selection, Beam option pass-through and metric collection."""
from __future__ import annotations

import functools
import os

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions


from pipelines.errors import UsageError  # noqa: F401 - re-exported for the drivers


@functools.lru_cache(maxsize=1)
def _known_beam_flags() -> frozenset[str]:
    import argparse
    parser = argparse.ArgumentParser(add_help=False)
    for cls in PipelineOptions.__subclasses__():
        _add(cls, parser)
    names = set()
    for action in parser._actions:
        for s in action.option_strings:
            names.add(s.lstrip("-"))
    return frozenset(names)


def _add(cls, parser):
    try:
        cls._add_argparse_args(parser)
    except Exception:   # an options class whose flags clash is still usable by Beam
        pass
    for sub in cls.__subclasses__():
        _add(sub, parser)


def check_beam_args(args: list[str]) -> None:
    """Leftover flags go to Beam; a flag neither we nor Beam know is a typo, said now
    rather than silently dropped by PipelineOptions."""
    known = _known_beam_flags()
    for a in args:
        if not a.startswith("--"):
            continue
        name = a[2:].split("=", 1)[0]
        if name not in known:
            raise UsageError(f"unknown option --{name}: not a curate flag nor a Beam pipeline option")


def make_pipeline(beam_args: list[str]) -> tuple[beam.Pipeline, str]:
    """A Pipeline for the given Beam flags. With no --runner, the local FnApiRunner on
    every core: Beam's DirectRunner would first try to download the Prism runner."""
    check_beam_args(beam_args)
    args = list(beam_args)
    if not any(a == "--save_main_session" or a.startswith("--save_main_session=") for a in args):
        args.append("--no_save_main_session")
    has_runner = any(a == "--runner" or a.startswith("--runner=") for a in args)
    if has_runner:
        options = PipelineOptions(args)
        runner_name = options.get_all_options()["runner"]
        return beam.Pipeline(options=options), str(runner_name)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    if not any(a.startswith("--direct_num_workers") for a in args):
        args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=multi_processing")
    options = PipelineOptions(args)
    return beam.Pipeline(runner=FnApiRunner(), options=options), "FnApiRunner"


def counters(result, namespace: str) -> dict[str, int]:
    """Counter values in one namespace (committed where the runner has them)."""
    out: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out
