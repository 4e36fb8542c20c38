"""Memory savers for large teachers: activation checkpointing, LoRA adapters, frozen embeddings/head.

Di[M]O holds three copies of the teacher (teacher, generator, aux). For LLaDA-8B that is 3 x 16 GB
in bf16; full fine-tuning of two 8B copies with Adam does not fit one 80 GB GPU, LoRA does (see
README.md for the numbers).
"""
from __future__ import annotations

import fnmatch

from torch import nn

from dimo_core.errors import ConfigError

# Attention and MLP projections of the common architectures (bundled/Llama/Qwen, LLaDA/OLMo, BERT).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  # Llama style
                        "attn_out", "ff_proj", "up_proj", "ff_out",                                # LLaDA (OLMo)
                        "query", "key", "value", "dense"]                                          # BERT


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward: transformers' switch where the class supports
    it, else the OLMo-style ``set_activation_checkpointing("whole_layer")`` that LLaDA's code has."""
    problem = f"{type(model).__name__} has no gradient_checkpointing_enable()"
    for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable"):
        if callable(enable := getattr(model, name, None)):
            try:
                enable()
                return
            except ValueError as e:  # transformers refuses classes without supports_gradient_checkpointing
                problem = str(e).splitlines()[0]
                break
    for module in model.modules():
        if callable(setter := getattr(module, "set_activation_checkpointing", None)):
            setter("whole_layer")
            return
    raise ConfigError(f"cannot turn on activation checkpointing: {problem}; set teacher.gradient_checkpointing=false")


def present_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """The LoRA target names that name at least one nn.Linear of ``model`` (peft refuses absent ones)."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    return [t for t in dict.fromkeys(targets) if t in leaf_names]


def apply_lora(model: nn.Module, rank: int = 16, alpha: float | None = None, targets: list[str] | None = None,
               dropout: float = 0.0) -> nn.Module:
    """Wrap ``model`` (a copy of the teacher's network) with LoRA adapters via peft.

    The adapters start at zero (B = 0), so the wrapped model computes exactly what the teacher does;
    only adapter weights require grad."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("LoRA needs peft: pip install 'dimo[lora]'") from None
    found = present_targets(model, targets or DEFAULT_LORA_TARGETS)
    if not found:
        raise ConfigError(f"no LoRA target module found among {targets or DEFAULT_LORA_TARGETS}; set lora_targets "
                          f"to names of the model's nn.Linear layers")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                        target_modules=found, bias="none")
    return get_peft_model(model, config)


def lora_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if "lora_" in n]


def freeze_matching(model: nn.Module, patterns: list[str]) -> list[str]:
    """requires_grad=False for parameters whose names match a pattern; returns the frozen names."""
    frozen = []
    for name, p in model.named_parameters():
        if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def embedding_and_head_patterns(teacher: nn.Module) -> list[str]:
    """fnmatch patterns (for distill.frozen) naming the input embedding and output head of a teacher."""
    wanted = []
    model = teacher.model
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter)()
        except (NotImplementedError, AttributeError):
            module = None
        if module is not None:
            wanted.append(module)
    patterns = [f"{name}.*" for name, m in teacher.named_modules() if any(m is w for w in wanted)]
    params = [n for n, _ in teacher.named_parameters()]  # a tied head has no parameter name of its own
    return [p for p in patterns if any(fnmatch.fnmatch(n, p) for n in params)]
