"""`dimo COMMAND --help` lists the command's keys with defaults; `student=` is a shorthand; messages name the
right keys."""
import pytest

from dimo_core.cli import main
from dimo_core.config import load_config
from dimo_core.registry import get_registry


@pytest.fixture
def help_of(capsys):
    def run(*args):
        try:
            status = main(list(args))
        except SystemExit as e:  # argparse's own --help exits
            status = e.code
        assert status == 0
        return capsys.readouterr().out
    return run


def test_run_help_lists_distill_keys_with_defaults_and_points_to_the_reference(help_of):
    text = help_of("run", "--help")
    assert "usage: dimo run" in text and "docs/configuration.md" in text
    assert "  distill.steps=1000 " in text and "generator updates" in text  # default and meaning from config.py
    assert "distill.divergence.name='fkl'" in text and "  out_dir=None" in text
    assert "sample.steps" not in text  # another command's section


@pytest.mark.parametrize("command,key", [("eval", "eval.teacher_steps=[1, 2, 4, 8, 16, 32]"),
                                         ("sample", "sample.n=16"), ("export", "export.format=None"),
                                         ("train-teacher", "train_teacher.steps=2000")])
def test_each_command_help_shows_its_own_section(help_of, command, key):
    assert key in help_of(command, "plugins=toy", "-h")


def test_global_help_points_to_command_help(help_of):
    assert "`dimo COMMAND --help`" in help_of("--help")


def test_student_shorthand_sets_the_student_of_sample_eval_and_export():
    config = load_config(["plugins=toy", "student=/tmp/s.safetensors"], get_registry())
    assert config.sample.student == config.eval.student == config.export.student == "/tmp/s.safetensors"


def test_an_unknown_init_strategy_is_named_in_english():
    from dimo_core.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown init strategy 'nope'"):
        load_config(["plugins=toy", "distill.init.name=nope"], get_registry())
