"""Plugin discovery, registration errors and configuration validation."""
import types

import pytest
import yaml

import dimo_core
from dimo_core.config import load_config
from dimo_core.errors import ConfigError, PluginError
from dimo_core.registry import Registry, get_registry, plugin_manager


def make_plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, dimo_core.hookimpl(fn))
    return module


def test_bundled_plugins_register_through_entry_points():
    registry = get_registry()
    names = {p.name for p in registry.plugins()}
    assert {"core", "toy"} <= names
    toy = next(p for p in registry.plugins() if p.name == "toy")
    assert toy.version == dimo_core.__version__ and toy.registers["teachers"] == ["toy_mdm"]
    assert {"fkl", "rkl", "jeffreys", "js", "tv", "f"} <= set(registry.names("divergences"))


def test_two_plugins_registering_one_name_is_an_error():
    a = make_plugin("plugin_a", register_divergences=lambda register: register("fkl", object))
    with pytest.raises(PluginError, match="'fkl' is registered by both plugin 'core' and plugin 'plugin_a'"):
        get_registry(extra=[a])


def test_misspelled_hook_fails_loudly():
    bad = make_plugin("plugin_bad", register_teacher=lambda register: None)
    with pytest.raises(PluginError, match="register_teachers"):
        plugin_manager(extra=[bad], entry_points=False)


def test_unknown_component_lists_choices():
    with pytest.raises(ConfigError, match="installed divergences: .*fkl"):
        get_registry().get("divergences", "kl_forward")


def test_config_layers_and_precedence(tmp_path):
    file = tmp_path / "my.yaml"
    file.write_text(yaml.safe_dump({"distill": {"steps": 7, "lr_aux": 0.5}}))
    config = load_config(["plugins=toy", f"config={file}", "distill.lr_aux=0.25"])
    assert config.teacher.name == "toy_mdm"          # from the toy preset
    assert config.distill.steps == 7                  # file over preset
    assert config.distill.lr_aux == 0.25              # command line over file
    assert config.distill.batch_size == 64            # preset over defaults
    assert config.run_dir.name == "toy"


@pytest.mark.parametrize("override,message", [
    ("distill.lrr=1", "unknown config key 'distill.lrr'; valid keys here: steps"),
    ("distill.steps=many", "distill.steps: Input should be a valid integer"),
    ("teacher.width=3", "unknown key teacher.width for teacher 'toy_mdm'; valid keys: name, path"),
    ("distill.divergence.name=kl_forward", "unknown divergence 'kl_forward'"),
    ("distill.aux_samples=sometimes", "distill.aux_samples"),
    ("distill.grad_accum=3", "not divisible"),
    ("nonsense=1", "unknown config key 'nonsense'"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(["plugins=toy", override])


def test_unknown_plugin_and_preset_list_the_installed_ones():
    with pytest.raises(ConfigError, match="unknown plugin 'maskgitt'; installed plugins: .*toy"):
        load_config(["plugins=maskgitt"])
    with pytest.raises(ConfigError, match="unknown preset 'fast'; installed presets: .*toy"):
        load_config(["plugins=toy", "preset=fast"])


def test_no_resolver_evaluates_code(tmp_path):
    code = "${python:__import__('os').getcwd()}"
    assert load_config(["plugins=toy", f"out_dir={code}"]).out_dir == code  # command-line values are literal text
    file = tmp_path / "code.yaml"
    file.write_text(f'out_dir: "{code}"\n')
    with pytest.raises(ConfigError, match="code.yaml"):  # refused, never evaluated
        load_config(["plugins=toy", f"config={file}"])


def test_required_preset_values_are_named_with_the_fix():
    registry = Registry(plugin_manager(extra=[make_plugin("needs", register_presets=lambda register: register(
        "needs", {"teacher": {"name": "toy_mdm", "path": dimo_core.REQUIRED},
                  "out_dir": "${teacher.path}"}))]))  # an interpolation: reported via teacher.path only
    with pytest.raises(ConfigError, match=r"required value not given: teacher\.path .*pass teacher\.path=\.\.\."):
        load_config(["preset=needs"], registry=registry)
    config = load_config(["preset=needs", "teacher.path=/t"], registry=registry)
    assert config.teacher.spec()["path"] == "/t" and config.out_dir == "/t"
