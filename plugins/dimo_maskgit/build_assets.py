"""Rebuild the committed teacher of the maskgit plugin.

    python -m dimo_maskgit.build_assets teacher [key=value ...]   # assets/fmnist_teacher.safetensors

``teacher`` is ``dimo train-teacher plugins=maskgit [key=value ...]`` (the core's training loop, this
plugin's preset) followed by a copy of the result into assets/; it also works where the ``maskgit``
entry point is not installed. The Fashion-MNIST tokenizer and CNN are the bench's:
``python -m dimo_fmnist.build_assets``.
"""
from __future__ import annotations

from pathlib import Path

from dimo_core.assets import teacher_asset_main

from . import plugin

ASSETS = Path(__file__).parent / "assets"


def main(argv: list[str] | None = None) -> None:
    teacher_asset_main("dimo_maskgit.build_assets", __doc__, "maskgit", plugin, ASSETS / "fmnist_teacher.safetensors", argv)


if __name__ == "__main__":
    main()
