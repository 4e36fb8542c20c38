"""The tree's shape, read from the files (nothing is imported): plug-ins import no other plug-in,
the core imports none, every plug-in has the same layout, and its presets ship in the wheel."""
import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Plug-ins are what the entry-point group names; dimo_fmnist is a library that plug-ins may import.
PLUGINS = sorted({ref.split(".")[0] for name, ref in PYPROJECT["project"]["entry-points"]["dimo"].items()
                  if name != "core"})
LIBRARIES = ["dimo_fmnist"]
# Names the same parts had before: a new file under one of them is a second name for a part.
RETIRED_NAMES = {"presets.py", "quality.py", "tiny.py", "prompts.py", "training_data.py", "vq.py", "model.py",
                 "hf_teacher.py", "fixtures.py"}


def imported_modules(path: Path) -> set[str]:
    """Top-level package of every absolute import in the file (relative imports stay inside)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def sources(package_dir: Path) -> list[Path]:
    return sorted(package_dir.rglob("*.py"))


def test_the_entry_points_name_the_bundled_plugins():
    assert PLUGINS == ["dimo_llada", "dimo_maskgit", "dimo_meissonic", "dimo_toy"]


@pytest.mark.parametrize("package", PLUGINS + LIBRARIES)
def test_no_plugin_imports_another_plugin(package):
    others = set(PLUGINS) - {package}
    offending = {str(path.relative_to(ROOT)): sorted(imported_modules(path) & others)
                 for path in sources(ROOT / "plugins" / package)}
    assert not {k: v for k, v in offending.items() if v}


def test_the_core_imports_no_plugin_and_no_library():
    offending = {str(path.relative_to(ROOT)): sorted(imported_modules(path) & set(PLUGINS + LIBRARIES))
                 for path in sources(ROOT / "dimo_core")}
    assert not {k: v for k, v in offending.items() if v}


def test_the_scan_sees_imports_of_every_form(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import a.b\nfrom c.d import e\nfrom . import f\nfrom .g import h\n"
                    "def later():\n    import dimo_maskgit.metrics\n")
    assert imported_modules(path) == {"a", "c", "dimo_maskgit"}


@pytest.mark.parametrize("package", PLUGINS)
def test_every_plugin_has_the_same_shape(package):
    folder = ROOT / "plugins" / package
    assert (folder / "plugin.py").is_file() and (folder / "README.md").is_file()
    assert sorted(folder.glob("presets/*.yaml")), f"{package}: presets are YAML files in presets/"
    assert not sorted(p.name for p in folder.iterdir() if p.name in RETIRED_NAMES)


@pytest.mark.parametrize("package", PLUGINS)
def test_plugin_py_holds_hooks_only(package):
    """No class in plugin.py, and every public function is a hook implementation."""
    tree = ast.parse((ROOT / "plugins" / package / "plugin.py").read_text())
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    public = [node for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
    not_hooks = [f.name for f in public if not any(ast.unparse(d).endswith("hookimpl") for d in f.decorator_list)]
    assert not classes and not not_hooks and all(f.name.startswith("register_") for f in public)


@pytest.mark.parametrize("package", PLUGINS)
def test_presets_are_package_data(package):
    """A non-editable install carries only declared files: without this the presets would be missing."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"].get(package, [])
    assert "presets/*.yaml" in patterns


def test_bundled_packages_are_all_found_by_setuptools():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {f"{p}*" for p in PLUGINS + LIBRARIES} <= set(include)


def test_core_tests_import_no_plugin():
    """tests/core runs on the core's SmallMDM and dummy teacher; plug-ins are tested in tests/plugins/."""
    offending = {str(path.relative_to(ROOT)): sorted(imported_modules(path) & set(PLUGINS + LIBRARIES))
                 for path in sorted((ROOT / "tests" / "core").glob("*.py"))}
    assert not {k: v for k, v in offending.items() if v}


def test_no_private_name_is_imported_across_modules():
    """`from x import _name` in the core, the plug-ins or the bench: a private name leaking out of its module."""
    offending = []
    for path in sources(ROOT / "dimo_core") + [p for package in PLUGINS + LIBRARIES
                                              for p in sources(ROOT / "plugins" / package)]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                offending += [f"{path.relative_to(ROOT)}: {alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offending
