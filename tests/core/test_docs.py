"""Docs stay in step with the code: every hook and every config key is documented."""
import re
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


ROOT = DOCS.parent
USER_DOCS = [ROOT / "README.md", *sorted(ROOT.glob("plugins/*/README.md")), *sorted(DOCS.glob("*.md"))]
LOGS = sorted((DOCS / "experiments").glob("*.md"))


# Markdown files dimo writes into a run folder: named in the docs, never part of the tree.
RUN_OUTPUTS = {"report.md", "samples.md", "text_examples.md"}


def _tree_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {Path(line) for line in out.splitlines()}


def test_relative_links_resolve():
    broken = []
    for doc in USER_DOCS + LOGS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_cited_markdown_files_exist():
    """A `NAME.md` cited in docs, plug-in sources or presets is a file of the tree (or a run output)."""
    names = {p.name for p in _tree_files()} | RUN_OUTPUTS
    cited = []
    for path in USER_DOCS + LOGS + sorted(ROOT.glob("plugins/*/**/*.py")) + sorted(ROOT.glob("plugins/*/**/*.yaml")):
        for name in re.findall(r"[\w.-]+\.md\b", path.read_text()):
            if Path(name).name not in names:
                cited.append(f"{path.relative_to(ROOT)}: {name}")
    assert cited == []


def test_preset_comments_cite_experiments_instead_of_numbers():
    """A measured figure in a preset comment goes stale; the dated entry in docs/experiments/ does not."""
    figure = re.compile(r"\b(FD|FID|gen-PPL|alignment|recall|accuracy)\s*[~=:]?\s*\d", re.IGNORECASE)
    quoted = []
    for preset in sorted(ROOT.glob("plugins/*/presets/*.yaml")):
        for number, line in enumerate(preset.read_text().splitlines(), 1):
            if "#" in line and figure.search(line[line.index("#"):]):
                quoted.append(f"{preset.relative_to(ROOT)}:{number}: {line.strip()}")
    assert quoted == []


def test_plugin_readmes_are_user_documents():
    """Short, and about the software: tuning history belongs in docs/experiments/<name>.md."""
    history = re.compile(r"\bissue \d|\b(first|second|third|fourth|fifth|sixth|seventh) (round|session)"
                         r"|\(replaced\)", re.IGNORECASE)
    for readme in sorted(ROOT.glob("plugins/*/README.md")):
        text = readme.read_text()
        assert len(text.splitlines()) <= 160, f"{readme.relative_to(ROOT)}: move history to docs/experiments/"
        assert (DOCS / "experiments" / f"{readme.parent.name.removeprefix('dimo_')}.md").exists()
    for doc in USER_DOCS + LOGS:
        found = history.search(doc.read_text())
        assert found is None, f"{doc.relative_to(ROOT)}: {found.group(0)!r} narrates how the work was organised"
