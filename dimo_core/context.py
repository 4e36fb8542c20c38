"""The build context handed to every component factory: config, device, and lazily built parts."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from .config import REQUIRED, Component, RunConfig
from .errors import CheckpointError, ConfigError
from .registry import Registry, get_registry


class Context:
    def __init__(self, config: RunConfig, registry: Registry | None = None):
        self.config = config
        self.registry = registry or get_registry()
        self.device = torch.device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)  # oversubscribed CPUs run many times slower
        self.seed = config.seed
        self.out_dir = config.run_dir

    def build(self, kind: str, component: Component, where: str):
        if component is None or component.name is None:
            raise ConfigError(f"{where}.name is not set; choose one of: {', '.join(self.registry.names(kind))} "
                              f"(or pick a plugin: plugins=NAME)")
        spec = component.spec()
        ungiven = [key for key, value in spec.items() if value == REQUIRED]
        if ungiven:
            raise ConfigError(f"required value not given: {', '.join(f'{where}.{k}' for k in ungiven)} (marked "
                              f"{REQUIRED!r} by a preset); pass {' '.join(f'{where}.{k}=...' for k in ungiven)}")
        return self.registry.build(kind, spec, self, where)

    @cached_property
    def tokenizer(self):
        return self.build("tokenizers", self.config.tokenizer, "tokenizer")

    @cached_property
    def conditions(self):
        return self.build("conditions", self.config.conditions, "conditions")

    @cached_property
    def dataset(self):
        return self.build("datasets", self.config.dataset, "dataset")

    @cached_property
    def teacher(self) -> torch.nn.Module:
        teacher = self.build("teachers", self.config.teacher, "teacher").to(self.device)
        if self.config.tokenizer.name is not None:
            check_vocabulary(teacher, self.tokenizer)
        return teacher


def check_vocabulary(teacher, tokenizer) -> None:
    """Refuse a teacher whose vocabulary or mask id disagrees with its tokenizer."""
    if teacher.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(f"vocabulary mismatch: the teacher predicts {teacher.vocab_size} tokens but the "
                              f"tokenizer has {tokenizer.vocab_size}; use the tokenizer the teacher was trained with")
    if tokenizer.mask_id is not None and tokenizer.mask_id != teacher.mask_id:
        raise CheckpointError(f"mask id mismatch: the teacher's mask id is {teacher.mask_id} but the tokenizer's is "
                              f"{tokenizer.mask_id}; use the tokenizer the teacher was trained with")
    if tokenizer.mask_id is None and teacher.mask_id < teacher.vocab_size:
        raise CheckpointError(f"the teacher's mask id {teacher.mask_id} is one of the tokenizer's {tokenizer.vocab_size} "
                              f"codes; a codebook tokenizer needs the mask id outside [0, {tokenizer.vocab_size})")
