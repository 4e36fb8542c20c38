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
        check_device_available(self.device)
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


def check_device_available(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"device={device} but torch sees no CUDA GPU (torch {torch.__version__}, {build}); use "
                          f"device=cpu, or install a CUDA build of torch on a machine with a GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device} but only {torch.cuda.device_count()} GPU(s) are visible; "
                          f"use device=cuda:0 ... cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device=mps but this machine or torch build has no MPS support; use device=cpu")


def check_teacher_logits(teacher: torch.nn.Module, conditions, device) -> None:
    """Before training: the teacher maps (1, seq_len) tokens to (1, seq_len, vocab_size) logits. A wider
    or narrower output would fail deep in a training step, or silently train on the wrong columns."""
    x = torch.full((1, teacher.seq_len), teacher.mask_id, device=device)
    was_training = teacher.training
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        cond = conditions.sample(1, torch.Generator(device).manual_seed(0)) if conditions is not None else None
        logits = teacher.eval()(x, cond)
    teacher.train(was_training)
    expected = (1, teacher.seq_len, teacher.vocab_size)
    if tuple(logits.shape) != expected:
        raise CheckpointError(f"the teacher's logits have shape {tuple(logits.shape)} for {tuple(x.shape)} tokens; "
                              f"expected {expected} (batch, seq_len, vocab_size={teacher.vocab_size}); its output "
                              f"layer and its vocab_size disagree: check teacher.* against the checkpoint")


def check_tokens(tokens: torch.Tensor, vocab_size: int, mask_id: int, where: str) -> None:
    """Data tokens lie in [0, vocab_size) and are not the mask id (else an IndexError in the embedding)."""
    bad = (tokens < 0) | (tokens >= vocab_size) | (tokens == mask_id)
    if bad.any():
        value = int(tokens[bad][0])
        what = "the mask id" if value == mask_id else f"outside [0, {vocab_size})"
        raise ConfigError(f"{where} gave token {value}, {what}; data tokens must lie in [0, {vocab_size}) and differ "
                          f"from the mask id {mask_id}: check the dataset's tokenizer against the teacher's vocabulary")
