"""Errors the CLI reports as usage errors (exit 2); kept free of Beam so that commands
which do not run a pipeline start fast."""


class UsageError(ValueError):
    pass


class StageOutcomeError(RuntimeError):
    """The stage ran to the end, but its result is not what the user asked for (every
    record rejected, damaged input not accepted): exit 1 with the reason and the fix."""


def unknown_argument(arg: str, flags: list[str]) -> str:
    """What to say about an argument no parser took: a bare word is usually the second
    file of an unquoted glob; a flag, usually a typo."""
    import difflib
    if not arg.startswith("-"):
        return (f"unexpected argument {arg!r}: if the shell expanded an unquoted glob after "
                f"--input into several files, quote the glob (--input 'data/*.jsonl.gz') or "
                f"repeat --input for each file")
    name = arg.split("=", 1)[0]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown option {name}: not a curate flag nor a Beam pipeline option{hint}"


class ClusterError(RuntimeError):
    """The cluster could not run the stage (no workers, other software on them, a task
    that kept killing its workers): exit 1 with what happened; nothing is complete."""
