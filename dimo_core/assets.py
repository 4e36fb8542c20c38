"""Helpers for a plug-in's ``build_assets.py``: the script that rebuilds its committed files."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def asset_parser(module: str, doc: str | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """``python -m MODULE ASSET [options]``: the parser (with ``--threads``, torch CPU threads, default
    1: the committed files were built on one thread) and its subparsers, one per asset."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser, parser.add_subparsers(dest="asset", required=True)


def train_teacher_into(name: str, plugin_module, overrides: list[str], out: Path) -> Path:
    """``dimo train-teacher plugins=NAME [overrides]`` through the core, with the plug-in registered
    from ``plugin_module`` (its entry point need not be installed), then the result copied to ``out``."""
    from .config import load_config
    from .context import Context
    from .registry import registry_with
    from .train_teacher import train_teacher
    registry = registry_with(name, plugin_module)
    ctx = Context(load_config([f"plugins={name}", *overrides], registry), registry)
    trained = train_teacher(ctx, progress=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained, out)
    print(f"wrote {out} (from {trained})")
    return out


def teacher_asset_main(module: str, doc: str | None, name: str, plugin_module, out: Path,
                       argv: list[str] | None = None) -> None:
    """The whole ``python -m MODULE teacher [key=value ...] [--out FILE]`` of a plug-in whose only
    built asset is its teacher: ``train_teacher_into`` on ``--threads`` threads."""
    import torch
    parser, sub = asset_parser(module, doc)
    teacher = sub.add_parser("teacher", help=f"dimo train-teacher plugins={name}, copied into assets/")
    teacher.add_argument("overrides", nargs="*", help="key=value config overrides")
    teacher.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_teacher_into(name, plugin_module, args.overrides, args.out)
