"""A stage command's flags are its settings: each flag (other than the few that steer
the command itself) is a field of the stage's pydantic model and reaches it by name,
and each field has a flag unless it is config-only."""
import pytest

from curation.config import DedupConfig, FilterRunConfig, ScoreRunConfig
from pipelines.cli import CONFIG_ONLY, NOT_SETTINGS, _settings_from_flags, build_parser


def _subparser(name):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command, model", [("dedup", DedupConfig), ("filter", FilterRunConfig),
                                            ("score", ScoreRunConfig)])
def test_flags_and_settings_are_one_set(command, model):
    dests = {a.dest for a in _subparser(command)._actions} - {"help"}
    fields = set(model.model_fields)
    assert dests - fields <= NOT_SETTINGS, f"flags that reach no setting: {sorted(dests - fields - NOT_SETTINGS)}"
    assert fields - dests <= CONFIG_ONLY, f"settings without a flag: {sorted(fields - dests - CONFIG_ONLY)}"


def test_a_flag_reaches_its_setting():
    args = build_parser().parse_args(["dedup", "--input", "x", "--output", "o", "--against", "i1",
                                      "--against", "i2", "--kept-tolerance", "0.1", "--keep", "longest"])
    got = _settings_from_flags(args, DedupConfig)
    assert got["against"] == ["i1", "i2"] and got["kept_tolerance"] == 0.1 and got["keep"] == "longest"
    assert got["threshold"] is None          # not given: the config file or the model decides
    cfg = DedupConfig(**{k: v for k, v in got.items() if v is not None})
    assert cfg.against == ["i1", "i2"] and cfg.threshold == 0.8


@pytest.mark.parametrize("command, model", [("dedup", DedupConfig), ("filter", FilterRunConfig),
                                            ("score", ScoreRunConfig)])
def test_a_flag_is_built_from_its_field(command, model):
    """Help, choices and repetition come from the model, so a setting is written once."""
    import typing
    for a in _subparser(command)._actions:
        f = model.model_fields.get(a.dest)
        if f is None:
            continue
        if not (command == "filter" and a.dest == "strict"):      # the one help a stage words its own way
            assert a.help == f.description, a.dest
        if typing.get_origin(f.annotation) is typing.Literal:
            assert a.choices == list(typing.get_args(f.annotation)), a.dest
        assert a.default is None, a.dest                         # the config file or the model decides
