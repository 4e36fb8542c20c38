"""Docs stay in step with the code: every hook and every config key is documented."""
import subprocess
import sys
from pathlib import Path

from dimo_core import hookspecs
from dimo_core.config import RunConfig

DOCS = Path(__file__).parents[2] / "docs"


def test_every_hook_is_documented():
    text = (DOCS / "writing-a-plugin.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert hooks and [h for h in hooks if f"`{h}`" not in text] == []


def test_configuration_reference_is_current(tmp_path):
    before = (DOCS / "configuration.md").read_text()
    subprocess.run([sys.executable, str(DOCS / "make_config_reference.py")], check=True)
    assert (DOCS / "configuration.md").read_text() == before, "run python docs/make_config_reference.py"
    for section in ("", "distill.", "train_teacher.", "sample.", "eval."):
        model = RunConfig if not section else RunConfig.model_fields[section[:-1]].annotation
        for key in model.model_fields:
            assert f"`{section}{key}`" in before, f"{section}{key} missing from docs/configuration.md"
