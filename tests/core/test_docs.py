"""Docs stay in step with the code: every hook and every config key is documented."""
import json
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
    for section in ("", "distill.", "train_teacher.", "sample.", "eval.", "export.", "log."):
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
        if (readme.parent / "presets").is_dir():   # a bundled preset says why its values were chosen
            assert (DOCS / "experiments" / f"{readme.parent.name.removeprefix('dimo_')}.md").exists()
    for doc in USER_DOCS + LOGS:
        found = history.search(doc.read_text())
        assert found is None, f"{doc.relative_to(ROOT)}: {found.group(0)!r} narrates how the work was organised"


def _report(rows, student_temperature=0.3, teacher_temperature=1.0):
    return {"config": {"eval": {"student_temperature": student_temperature,
                                "sampler": {"name": "llada", "temperature": teacher_temperature}}},
            "rows": [{"sampler": who, "steps": steps, "metrics": metrics, "seconds_per_sample": s}
                     for who, steps, metrics, s in rows]}


def test_results_table_from_reports(tmp_path, capsys):
    sys.path.insert(0, str(DOCS))
    import results_table

    text = {"gen_ppl": 6091.4, "entropy": 3.3649, "distinct_2": 0.87, "nll": 8.7}
    full = _report([("teacher", 1, text, 0.01612), ("student", 1, {**text, "gen_ppl": 212.2}, 0.00339)])
    argmax = _report([("student", 1, {**text, "gen_ppl": 63.34}, 0.0031)], student_temperature=0.0)
    cold_teacher = _report([("teacher", 4, text, 0.0563)], teacher_temperature=0.3)
    paths = []
    for i, report in enumerate((full, argmax, cold_teacher)):
        paths.append(tmp_path / f"report{i}.json")
        paths[-1].write_text(json.dumps(report))
    results_table.main(["llada", *map(str, paths)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| sampler | steps | gen-PPL | entropy | distinct-2 | s/response |"
    assert lines[2:6] == ["| teacher | 1 | 6091 | 3.36 | 0.870 | 0.0161 |",
                          "| **student, temperature 0.3** | 1 | 212 | 3.36 | 0.870 | 0.00339 |",
                          "| student, argmax | 1 | 63.3 | 3.36 | 0.870 | 0.0031 |",
                          "| teacher, temperature 0.3 | 4 | 6091 | 3.36 | 0.870 | 0.0563 |"]
    assert results_table.table("llada", [full]).splitlines()[3].startswith("| **student** | 1 |")
    # the top README keeps fewer image columns, in the plug-in table's order
    image = {"fd_fmnist_cnn": 2.423, "is_fmnist_cnn": 7.63, "precision": 0.9, "recall": 0.4, "coverage": 0.59,
             "class_accuracy": 0.906}
    short = results_table.table("maskgit", [_report([("student", 1, image, 0.00102)])],
                                results_table.SUMMARY["maskgit"])
    assert short.splitlines()[2] == "| **student** | 1 | 2.42 | 0.90 | 0.40 | 0.906 | 0.00102 |"


def test_results_blocks_are_replaceable():
    """Each README holds one result block per bundled plug-in, which the script replaces and nothing else."""
    sys.path.insert(0, str(DOCS))
    import results_table

    top = (ROOT / "README.md").read_text()
    for name in results_table.COLUMNS:
        readme = (ROOT / "plugins" / f"dimo_{name}" / "README.md").read_text()
        for text in (top, readme):
            assert text.count(f"<!-- results:{name} -->") == 1 == text.count(f"<!-- /results:{name} -->")
            new = results_table.replace_block(text, name, results_table.block(name, "| new |", "Measured."))
            before, _, rest = text.partition(f"<!-- results:{name} -->")
            after = rest.partition(f"<!-- /results:{name} -->")[2]
            assert new == before + f"<!-- results:{name} -->\nMeasured.\n\n| new |\n\n<!-- /results:{name} -->" + after
