"""Errors the CLI reports as usage errors (exit 2); kept free of Beam so that commands
which do not run a pipeline start fast."""


class UsageError(ValueError):
    pass
