"""Runner selection, Beam option pass-through and metric collection."""
from __future__ import annotations

import functools
import logging
import os
import shlex
import sys

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions


from pipelines.errors import UsageError  # noqa: F401 - re-exported for the drivers


@functools.lru_cache(maxsize=2)
def _beam_parser(dask: bool = False):
    import argparse
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    if dask:   # the --dask_* flags: importing Dask costs every other run half a second
        try:
            import pipelines.dask_runner  # noqa: F401
        except ImportError:
            pass
    for cls in PipelineOptions.__subclasses__():
        _add(cls, parser)
    return parser


def _known_beam_flags() -> frozenset[str]:
    return frozenset(s.lstrip("-") for a in _beam_parser(True)._actions for s in a.option_strings)


def _add(cls, parser):
    try:
        cls._add_argparse_args(parser)
    except Exception:   # an options class whose flags clash is still usable by Beam
        pass
    for sub in cls.__subclasses__():
        _add(sub, parser)


def check_beam_args(args: list[str], ours: tuple[str, ...] = ()) -> None:
    """Leftover arguments go to Beam; one that neither we nor Beam's PipelineOptions take
    is a mistake, said now rather than dropped by PipelineOptions with a warning. `ours`
    are the command's own flags, for suggestions."""
    from pipelines.errors import unknown_argument
    on_dask = is_dask_runner(list(args))
    if on_dask:
        _require_dask()
    else:
        stray = next((a.split("=", 1)[0] for a in args if a.startswith("--dask_")), None)
        if stray:   # else the run would go to the local runner with the flag ignored
            raise UsageError(f"{stray} is a flag of --runner dask; add --runner dask (docs/dask.md)")
    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            _, rest = _beam_parser(on_dask).parse_known_args(list(args))
        except SystemExit:   # a Beam flag with a bad value: PipelineOptions says which
            return
    if rest:
        raise UsageError(unknown_argument(rest[0], [*ours, *("--" + n for n in _known_beam_flags())]))


def make_pipeline(beam_args: list[str]) -> tuple[beam.Pipeline, str]:
    """A Pipeline for the given Beam flags. With no --runner, the local FnApiRunner on
    every core: Beam's DirectRunner would first try to download the Prism runner."""
    check_beam_args(beam_args)
    args = list(beam_args)
    if not any(a == "--save_main_session" or a.startswith("--save_main_session=") for a in args):
        args.append("--no_save_main_session")
    has_runner = any(a == "--runner" or a.startswith("--runner=") for a in args)
    if has_runner and is_dask_runner(args):
        return _dask_pipeline(args)
    if has_runner:
        options = PipelineOptions(args)
        runner_name = options.get_all_options()["runner"]
        return beam.Pipeline(options=options), str(runner_name)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    if not any(a.startswith("--direct_num_workers") for a in args):
        args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    args, mode = pop_flag(args, "--direct_running_mode")
    if mode not in (None, "multi_processing"):
        options = PipelineOptions(args + [f"--direct_running_mode={mode}"])
        return beam.Pipeline(runner=FnApiRunner(), options=options), "FnApiRunner"
    # worker processes as multi_processing would start them, through our entry point,
    # so that they end with this process even when it is killed
    from apache_beam.transforms.environments import SubprocessSDKEnvironment
    from pipelines.worker_main import PARENT_ENV
    env = SubprocessSDKEnvironment.from_command_string(
        f"{PARENT_ENV}={os.getpid()} exec {shlex.quote(sys.executable)} -m pipelines.worker_main")
    _quiet_running_mode_warning()
    options = PipelineOptions(args)
    return beam.Pipeline(runner=FnApiRunner(default_environment=env), options=options), "FnApiRunner"


def is_dask_runner(args: list[str]) -> bool:
    _, name = pop_flag(args, "--runner")
    return name is not None and (name.lower() == "dask" or name in (
        "DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"))


def _require_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise UsageError("--runner dask needs Dask: pip install 'curation[dask]'") from None


def _dask_pipeline(args: list[str]) -> tuple[beam.Pipeline, str]:
    _require_dask()
    # Beam's own DaskRunner loses data on our graphs (docs/dask.md): ours, whichever name
    from pipelines.dask_runner import DaskRunner
    rest, _ = pop_flag(args, "--runner")
    return beam.Pipeline(runner=DaskRunner(), options=PipelineOptions(rest)), "DaskRunner"


def pop_flag(args: list[str], flag: str) -> tuple[list[str], str | None]:
    """The arguments without `flag` (as `--f V` or `--f=V`), and its last value."""
    out, value, i = [], None, 0
    while i < len(args):
        a = args[i]
        if a == flag and i + 1 < len(args):
            value, i = args[i + 1], i + 2
            continue
        if a.startswith(flag + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, value


class _RunningModeNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # our workers are processes although the mode reads in_memory (see make_pipeline)
        return "direct_running_mode" not in record.getMessage()


def _quiet_running_mode_warning() -> None:
    log = logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner")
    if not any(isinstance(f, _RunningModeNote) for f in log.filters):
        log.addFilter(_RunningModeNote())


def distribution_max(result, namespace: str, name: str) -> int | None:
    """The largest value a distribution metric saw, or None when nothing updated it."""
    best = None
    f = MetricsFilter().with_namespace(namespace).with_name(name)
    for d in result.metrics().query(f)["distributions"]:
        value = d.committed if d.committed is not None else d.attempted
        if value is not None and value.count:
            best = value.max if best is None else max(best, value.max)
    return None if best is None else int(best)


def counters(result, namespace: str) -> dict[str, int]:
    """Counter values in one namespace (committed where the runner has them)."""
    out: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out
