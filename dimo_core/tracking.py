"""Experiment tracking beside ``train_log.jsonl``: ``log.tensorboard=true`` writes the same numbers as
TensorBoard scalars (``out_dir/tensorboard``; view with ``tensorboard --logdir out_dir``)."""
from __future__ import annotations

import math
from pathlib import Path

from .errors import ConfigError


class TensorBoardLog:
    """Wraps the JSON log: every record is written there, and its numbers as scalars at its step."""

    def __init__(self, json_log, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log.tensorboard=true needs the tensorboard package: pip install 'dimo[tensorboard]' "
                              "(or set log.tensorboard=false)") from None
        self.json_log = json_log
        self.writer = SummaryWriter(str(folder))

    def write(self, record: dict) -> None:
        self.json_log.write(record)
        step = record.get("step", 0)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(f"distill/{key}", value, step)
        self.writer.flush()  # a killed run keeps what it logged, as the JSON log does

    def close(self) -> None:
        self.writer.close()
