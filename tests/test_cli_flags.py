"""A stage command's flags are its settings: each flag (other than the few that steer
the command itself) is a field of the stage's pydantic model and reaches it by name,
and each field has a flag unless it is config-only."""
import pytest

from curation.config import (ClassifierConfig, DedupConfig, ExportConfig, FilterRunConfig, LabelConfig,
                             ScoreRunConfig)
from pipelines.cli import CONFIG_ONLY, NOT_SETTINGS, _settings_from_flags, build_parser

COMMANDS = [("dedup", DedupConfig, set()), ("filter", FilterRunConfig, set()),
            ("score", ScoreRunConfig, set()), ("label", LabelConfig, {"max_tokens"}),
            # the inputs and outputs of these two are not settings of their model
            ("train-classifier", ClassifierConfig, {"labels", "output", "threshold"}),
            ("export", ExportConfig, {"mixture", "output"})]


def _subparser(name):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command, model, own", COMMANDS)
def test_flags_and_settings_are_one_set(command, model, own):
    dests = {a.dest for a in _subparser(command)._actions} - {"help"}
    fields = set(model.model_fields)
    assert dests - fields <= NOT_SETTINGS | own, f"flags that reach no setting: {sorted(dests - fields - NOT_SETTINGS - own)}"
    assert fields - dests <= CONFIG_ONLY | own, f"settings without a flag: {sorted(fields - dests - CONFIG_ONLY - own)}"


def test_a_flag_reaches_its_setting():
    args = build_parser().parse_args(["dedup", "--input", "x", "--output", "o", "--against", "i1",
                                      "--against", "i2", "--kept-tolerance", "0.1", "--keep", "longest"])
    got = _settings_from_flags(args, DedupConfig)
    assert got["against"] == ["i1", "i2"] and got["kept_tolerance"] == 0.1 and got["keep"] == "longest"
    assert got["threshold"] is None          # not given: the config file or the model decides
    cfg = DedupConfig(**{k: v for k, v in got.items() if v is not None})
    assert cfg.against == ["i1", "i2"] and cfg.threshold == 0.8


@pytest.mark.parametrize("command, model, own", COMMANDS)
def test_a_flag_is_built_from_its_field(command, model, own):
    """Help, choices and repetition come from the model, so a setting is written once."""
    import typing
    for a in _subparser(command)._actions:
        f = model.model_fields.get(a.dest)
        if f is None:
            continue
        if not (command == "filter" and a.dest == "strict"):      # the one help a stage words its own way
            assert a.help == f.description, a.dest
        if typing.get_origin(f.annotation) is typing.Literal and not (command == "label" and a.dest == "labeler"):
            assert a.choices == list(typing.get_args(f.annotation)), a.dest
        assert a.default is None, a.dest                         # the config file or the model decides


def test_label_help_names_the_builtin_rubrics():
    from classifiers.rubrics import BUILTIN
    assert f"({', '.join(BUILTIN)}; default" in LabelConfig.model_fields["rubric"].description


def test_train_and_export_flags_are_checked_by_their_models(tmp_path, capsys):
    from pipelines.cli import main
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"text": "a b c", "score": 1}\n', encoding="utf-8")
    assert main(["train-classifier", "--labels", str(labels), "--output", str(tmp_path / "m"),
                 "--threshold", "0.5", "--valid-fraction", "1.5"]) == 2
    assert "valid_fraction" in capsys.readouterr().err
    assert main(["export", "--mixture", str(tmp_path / "none.yaml"), "--output", str(tmp_path / "e"),
                 "--tokens", "0"]) == 2
    assert "tokens" in capsys.readouterr().err
