"""YAML presets: ./ and ../ paths resolve against the preset file, everything else is kept."""
import pytest

from dimo_core.errors import ConfigError
from dimo_core.presets import load_preset


def test_relative_paths_resolve_against_the_preset_file(tmp_path):
    folder = tmp_path / "pkg" / "presets"
    folder.mkdir(parents=True)
    (folder / "p.yaml").write_text(
        "teacher: {name: t, path: ../assets/teacher.safetensors}\n"
        "conditions: {name: c, path: ./prompts.txt, other: prompts.txt}\n"
        "tokenizer: {name: k, path: '${teacher.path}'}\n"
        "dataset: {name: d, root: /abs/data, files: [../a.txt, b.txt]}\n"
        "eval: {metrics: [{name: m, reference: '???'}]}\n")
    preset = load_preset(folder / "p.yaml")
    assert preset["teacher"]["path"] == str(tmp_path / "pkg" / "assets" / "teacher.safetensors")
    assert preset["conditions"] == {"name": "c", "path": str(folder / "prompts.txt"), "other": "prompts.txt"}
    assert preset["tokenizer"]["path"] == "${teacher.path}"      # interpolations stay for the merge
    assert preset["dataset"] == {"name": "d", "root": "/abs/data", "files": [str(tmp_path / "pkg" / "a.txt"), "b.txt"]}
    assert preset["eval"]["metrics"][0]["reference"] == "???"    # REQUIRED stays required


def test_missing_or_malformed_preset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="preset file not found: .*nope.yaml.*package-data"):
        load_preset(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_preset(tmp_path / "list.yaml")
