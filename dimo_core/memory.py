"""How much memory a Di[M]O run needs per process: an estimate printed before training, the peak
measured after, and an early refusal when the estimate exceeds what the device has free.

Rough by design (within ~30% on the models we measured): it counts what Algorithm 1 holds at its
peak, not the allocator's rounding. Per process:
  weights      teacher: params; generator, aux: their trainable parameters (the frozen ones are the
               teacher's own tensors), or 3 x params with FSDP, divided over ranks
  gradients    one trainable copy at a time (the generator's are freed before the aux backward)
  Adam         two moments for generator and aux: 4 x trainable
  EMA          one fp32 shadow of the generator's trainable weights
  activations  per layer and token ~ (8 h + 4 mlp) values in the autocast dtype (flash/SDPA attention,
               no L^2 term); with activation checkpointing one h per layer plus one layer recomputed
  logits       ~12 (B, L, V) fp32 tensors: generator logits and their gradient, guided teacher logits
               (doubled batch), aux logits, the divergence's softmaxes
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field

import torch
from torch import nn

GiB = 2 ** 30
LOGIT_COPIES = 12
CUDA_OVERHEAD = int(1.5 * GiB)  # CUDA context, cuBLAS workspaces, allocator slack


@dataclass
class ModelShape:
    """What the estimate needs to know about one copy of the teacher."""
    params: int                 # all parameters of one copy
    trainable: int              # parameters the generator and the aux train (not distill.frozen, not LoRA base)
    layers: int
    hidden: int
    mlp: int
    vocab: int                  # logit columns
    seq_len: int                # tokens per sample the model sees (prompt + response for text)
    weight_bytes: float = 4.0   # bytes per stored weight (fp32 master weights: 4; a bf16 frozen base: 2)
    trainable_bytes: float = 4.0

    @classmethod
    def transformer(cls, layers: int, hidden: int, mlp: int, vocab: int, seq_len: int, *, gated: bool = True,
                    tied: bool = False, lora_rank: int = 0, weight_bytes: float = 4.0) -> "ModelShape":
        """A Llama-style block stack (attention 4 h^2, MLP 3 h mlp if gated); LoRA on all seven projections."""
        per_layer = 4 * hidden * hidden + (3 if gated else 2) * hidden * mlp + 2 * hidden
        params = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden
        trainable = params
        if lora_rank:
            per_layer_lora = lora_rank * (4 * 2 * hidden + (3 if gated else 2) * (hidden + mlp))
            trainable = layers * per_layer_lora
        return cls(params, trainable, layers, hidden, mlp, vocab, seq_len, weight_bytes,
                   4.0 if lora_rank else weight_bytes)

    @classmethod
    def of(cls, model: nn.Module, frozen: list[str] = (), condition_tokens: int = 0) -> "ModelShape":
        """Read the shape off a teacher: parameter counts exactly, the rest by inspection.
        ``condition_tokens``: positions a condition adds to what the model reads (a text prompt)."""
        from .distributed import find_layers
        from .engine import name_matches
        params = list(model.named_parameters())
        before = [p.requires_grad for _, p in params]
        model.requires_grad_(True)  # what the engine asks of a generator copy (a LoRA teacher: its adapters only)
        train = [p for n, p in params if p.requires_grad and not any(name_matches(n, pat) for pat in frozen)]
        for (_, p), flag in zip(params, before):
            p.requires_grad_(flag)
        total = sum(p.numel() for _, p in params)
        blocks = find_layers(model) or [model]
        embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        hidden = max(embeddings, key=lambda e: e.num_embeddings).embedding_dim if embeddings else 0
        linears = [m for m in blocks[0].modules() if isinstance(m, nn.Linear)]
        hidden = hidden or (linears[0].in_features if linears else 1)
        mlp = max([m.out_features for m in linears if m.in_features == hidden] or [4 * hidden])
        tokens = (getattr(model, "tokens_per_sample", None) or getattr(model, "seq_len", 1)) + condition_tokens
        return cls(total, sum(p.numel() for p in train), len(blocks), hidden, mlp, int(getattr(model, "vocab_size", 1)),
                   int(tokens),
                   sum(p.numel() * p.element_size() for _, p in params) / max(total, 1),
                   sum(p.numel() * p.element_size() for p in train) / max(sum(p.numel() for p in train), 1))


@dataclass
class MemoryEstimate:
    parts: dict[str, int] = field(default_factory=dict)  # bytes per process
    setting: str = ""

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def table(self) -> str:
        rows = [f"memory estimate per process ({self.setting}):"]
        rows += [f"  {name:<28s}{format_bytes(b):>12s}" for name, b in self.parts.items()]
        return "\n".join(rows + [f"  {'total':<28s}{format_bytes(self.total):>12s}"])


def estimate_memory(shape: ModelShape, *, batch_per_rank: int, dtype: str = "float32", strategy: str = "none",
                    world: int = 1, activation_checkpointing: bool = False, ema: bool = True,
                    cuda: bool = False) -> MemoryEstimate:
    """Bytes per process at the peak of one Di[M]O iteration (see the module docstring)."""
    shards = world if strategy == "fsdp" else 1
    act_bytes = 2 if dtype == "bfloat16" else 4
    tokens = batch_per_rank * shape.seq_len
    per_layer_token = 8 * shape.hidden + 4 * shape.mlp
    if activation_checkpointing:
        activations = tokens * act_bytes * (shape.layers * shape.hidden + per_layer_token)
    else:
        activations = tokens * act_bytes * shape.layers * per_layer_token
    state = shape.trainable * shape.trainable_bytes
    # generator and aux share the teacher's frozen tensors (engine.trainable_copy), except under FSDP
    copied = shape.params * shape.weight_bytes if strategy == "fsdp" else state
    parts = {
        "teacher weights": int(shape.params * shape.weight_bytes / shards),
        "generator + aux weights": int(2 * copied / shards),
        "gradients (one model)": int(state / shards),
        "Adam moments (two models)": int(4 * state / shards),
        "EMA of the generator": int(shape.trainable * 4 / shards) if ema else 0,
        "activations": int(activations),
        "logits and divergence": int(LOGIT_COPIES * tokens * shape.vocab * 4),
    }
    if strategy == "fsdp" and shards > 1:  # one block gathered in full at a time, with its gradient
        parts["FSDP gathered block"] = int(2 * shape.params / max(shape.layers, 1) * shape.weight_bytes)
    if cuda:
        parts["CUDA context, allocator slack"] = CUDA_OVERHEAD
    setting = (f"{world} process{'es' * (world > 1)}{f' ({strategy})' if strategy != 'none' else ''}, "
               f"{dtype}, {batch_per_rank} samples per micro-batch per process, activation checkpointing "
               f"{'on' if activation_checkpointing else 'off'}")
    return MemoryEstimate(parts, setting)


def free_memory(device: torch.device, processes_here: int = 1) -> int:
    """Bytes this process may use: free GPU memory, or the host's available memory shared by the
    processes of this node."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(_host_available_bytes() / max(processes_here, 1))


def _host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere the free pages sysconf reports."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """Peak bytes: torch.cuda.max_memory_allocated on GPU; the process's peak resident set on CPU
    (which includes Python and torch themselves, a few hundred MiB)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def format_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:.1f} MiB"
