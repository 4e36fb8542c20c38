"""Rebuild the committed teacher of the maskgit plugin.

    python -m dimo_maskgit.build_assets teacher [key=value ...]   # assets/fmnist_teacher.safetensors

``teacher`` is ``dimo train-teacher plugins=maskgit [key=value ...]`` (the core's training loop, this
plugin's preset) followed by a copy of the result into assets/; it also works where the ``maskgit``
entry point is not installed. The Fashion-MNIST tokenizer and CNN are the bench's:
``python -m dimo_fmnist.build_assets``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

ASSETS = Path(__file__).parent / "assets"


def build_teacher(overrides: list[str], out: Path) -> None:
    import shutil

    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.registry import registry_with
    from dimo_core.train_teacher import train_teacher

    from . import plugin
    registry = registry_with("maskgit", plugin)
    ctx = Context(load_config(["plugins=maskgit", *overrides], registry), registry)
    trained = train_teacher(ctx, progress=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained, out)
    print(f"wrote {out} (from {trained})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dimo_maskgit.build_assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="asset", required=True)
    teacher = sub.add_parser("teacher", help="dimo train-teacher plugins=maskgit, copied into assets/")
    teacher.add_argument("overrides", nargs="*", help="key=value config overrides")
    teacher.add_argument("--out", type=Path, default=ASSETS / "fmnist_teacher.safetensors")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    build_teacher(args.overrides, args.out)


if __name__ == "__main__":
    main()
