"""Helpers for plug-in authors: registry_with, ClassLabels, SmallMDM, and REQUIRED values that only
stop the commands that read them."""
import types

import pytest
import torch

import dimo_core
from dimo_core.cli import main
from dimo_core.conditions import ClassLabels
from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.errors import ConfigError
from dimo_core.mdm import SmallMDM
from dimo_core.registry import registry_with
from dimo_core.testing import TeacherContract


def tiny_plugin():
    """A plug-in module as a third party writes one: a SmallMDM teacher, class labels, a preset whose
    teacher.path the user must give."""
    module = types.ModuleType("tiny_plugin")

    def register_teachers(register):
        def tiny_mdm(ctx, path: str | None = None):
            model = SmallMDM(vocab_size=5, seq_len=4, num_classes=2, dim=8, depth=1, heads=2)
            if path is not None:
                raise AssertionError("the path was used")  # these tests never build with a path
            return model
        register("tiny_mdm", tiny_mdm)

    def register_conditions(register):
        register("tiny_labels", lambda ctx: ClassLabels(2))

    def register_presets(register):
        register("tiny", {"teacher": {"name": "tiny_mdm", "path": dimo_core.REQUIRED},
                          "conditions": {"name": "tiny_labels"},
                          "tokenizer": {"name": None, }})

    for hook in (register_teachers, register_conditions, register_presets):
        setattr(module, hook.__name__, dimo_core.hookimpl(hook))
    return module


@pytest.fixture
def registry():
    return registry_with("tiny", tiny_plugin(), entry_points=False)


def test_registry_with_registers_the_module_under_its_name_beside_the_core(registry):
    assert {p.name for p in registry.plugins()} == {"core", "tiny"}
    assert registry.get("teachers", "tiny_mdm").plugin == "tiny"
    assert "fkl" in registry.names("divergences")           # the core's built-ins are there
    assert load_config(["plugins=tiny", "teacher.path=/t"], registry).teacher.name == "tiny_mdm"


def test_registry_with_replaces_an_installed_copy_of_the_same_name():
    from dimo_core import builtins
    registry = registry_with("core", builtins)                 # the same module: kept once, no clash
    assert registry.get("divergences", "fkl").plugin == "core"
    other = types.ModuleType("other_core")
    other.register_divergences = dimo_core.hookimpl(lambda register: register("mine", object))
    replaced = registry_with("core", other)
    assert replaced.names("divergences") == ["mine"]


def test_a_required_value_stops_only_commands_that_read_it(registry, capsys):
    with pytest.raises(ConfigError, match=r"required value not given: teacher\.path .*pass teacher\.path=\.\.\."):
        load_config(["plugins=tiny"], registry)
    shown = load_config(["plugins=tiny"], registry, unused=("teacher.path",))
    assert shown.teacher.spec()["path"] == dimo_core.REQUIRED
    with pytest.raises(ConfigError, match=r"required value not given: teacher\.path"):
        Context(shown, registry).teacher   # building it still refuses, naming the key
    assert load_config(["plugins=tiny"], registry, unused=("teacher",)).teacher.spec()["path"] == "???"


def test_config_show_prints_required_values_and_train_teacher_is_not_blocked(monkeypatch, capsys):
    monkeypatch.setattr("dimo_core.registry.get_registry",
                        lambda *a, **k: registry_with("tiny", tiny_plugin(), entry_points=False))
    assert main(["config", "show", "plugins=tiny"]) == 0
    assert "path: ???" in capsys.readouterr().out
    assert main(["sample", "plugins=tiny"]) == 2                 # sample reads the teacher: refused up front
    assert "required value not given: teacher.path" in capsys.readouterr().err


def test_an_interpolation_of_an_unused_required_value_stays_required():
    module = tiny_plugin()
    module.register_presets = dimo_core.hookimpl(lambda register: register(
        "tiny", {"teacher": {"name": "tiny_mdm", "path": dimo_core.REQUIRED}, "out_dir": "${teacher.path}"}))
    registry = registry_with("tiny", module, entry_points=False)
    config = load_config(["plugins=tiny"], registry, unused=("teacher.path",))
    assert config.out_dir == "???"


def test_class_labels_draw_cycle_name_and_null():
    labels = ClassLabels(10)
    g = torch.Generator().manual_seed(0)
    train = labels.sample(1000, g)
    assert train.dtype == torch.long and 0 <= train.min() and train.max() < 10 and len(train.unique()) == 10
    assert labels.sample(12, g, split="eval").tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert labels.null(train[:4]).tolist() == [10] * 4
    named = ClassLabels(3, ("cat", "dog", "ankle boot"))
    assert named.from_text(["Dog", "0", "ankle boot"]).tolist() == [1, 0, 2]
    with pytest.raises(ConfigError, match="names no class; give an index 0..2 or one of: cat, dog, ankle boot"):
        named.from_text(["cow"])
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        ClassLabels(0)


class TestSmallMDMContract(TeacherContract):
    def make_teacher(self):
        torch.manual_seed(0)
        return SmallMDM(vocab_size=7, seq_len=5, num_classes=3, dim=16, depth=1, heads=2)

    def make_conditions(self):
        return ClassLabels(3)


class TestUnconditionalSmallMDMContract(TeacherContract):
    def make_teacher(self):
        torch.manual_seed(0)
        return SmallMDM(vocab_size=7, seq_len=5, num_classes=0, dim=16, depth=1, heads=2)


def test_small_mdm_is_bidirectional_and_never_predicts_the_mask():
    torch.manual_seed(0)
    model = SmallMDM(vocab_size=6, seq_len=5, num_classes=0, dim=16, depth=2, heads=2).eval()
    x = torch.randint(0, 6, (2, 5))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 6                              # change the LAST token only
    with torch.no_grad():
        a, b = model(x, None), model(y, None)
    assert a.shape == (2, 5, 6)                                # logits over the 6 real tokens
    assert not torch.allclose(a[:, 0], b[:, 0])                # the first position sees the last
