"""Rebuild the committed teacher of the toy plug-in.

    python -m dimo_toy.build_assets teacher [key=value ...]   # assets/teacher.safetensors

``teacher`` is ``dimo train-teacher plugins=toy [key=value ...]`` (the core's training loop, the
preset's ``train_teacher`` section) followed by a copy of the result into assets/.
"""
from __future__ import annotations

from pathlib import Path

from dimo_core.assets import teacher_asset_main

from . import plugin

ASSETS = Path(__file__).parent / "assets"


def main(argv: list[str] | None = None) -> None:
    teacher_asset_main("dimo_toy.build_assets", __doc__, "toy", plugin, ASSETS / "teacher.safetensors", argv)


if __name__ == "__main__":
    main()
