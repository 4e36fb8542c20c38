"""`dimo run` on several processes: data parallel (DDP) or sharded parameters (FSDP2), plus the
per-model switches (activation checkpointing, torch.compile) applied when the engine builds its models.

Launch: ``torchrun --nproc-per-node N -m dimo_core run plugins=NAME distributed.strategy=ddp|fsdp``.

How a global batch is split so that N processes train exactly what one process would:
every rank draws the WHOLE global micro-batch's x_init, conditions and masks from the same seeded
generator and keeps its own rows (rank r keeps rows [r*n, (r+1)*n)); the generator's categorical
samples come from one generator per row, seeded from that shared stream. The union of the ranks'
rows is therefore the one-process batch, whatever N is: "rank-distinct" means rank-distinct rows.
Gradients are averaged over ranks (DDP all-reduce or FSDP reduce-scatter); losses that are means over
a rank's own masked positions are reweighted so that the average is the mean over all positions.
Embedding noise and dropout use torch's global stream, seeded ``seed + rank``: distinct per rank,
not split-invariant (the toy preset has neither).

Checkpoints hold full (unsharded) tensors under the plain module names, written by rank 0 and read
by every rank, so a run resumes on any number of processes and under either strategy. Multi-node
runs need out_dir on a filesystem every node sees.
"""
from __future__ import annotations

import datetime
import functools
import os
import warnings
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import ConfigError, DimoError


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Parallel:
    """This process's place in the job and how models are spread over the processes.

    The default, ``Parallel()``, is one process with nothing wrapped: every method is then a no-op."""

    def __init__(self, strategy: str = "none", rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
                 performance=None, shard_teacher: bool = True, owns_group: bool = False):
        from .config import PerformanceConfig
        self.strategy, self.rank, self.world = strategy, rank, world
        self.device = torch.device(device)
        self.performance = performance or PerformanceConfig()
        self.shard_teacher, self.owns_group = shard_teacher, owns_group
        self.mesh = None
        if strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            self.mesh = init_device_mesh(self.device.type, (world,))

    # ---- start and stop --------------------------------------------------------------------------
    @classmethod
    def start(cls, config) -> "Parallel":
        """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK in the environment)."""
        world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        settings, distill = config.distributed, config.distill
        strategy = settings.strategy if settings.strategy != "auto" else ("ddp" if world > 1 else "none")
        if world > 1 and strategy == "none":
            raise ConfigError(f"launched on {world} processes but distributed.strategy=none; use ddp or fsdp "
                              f"(or launch one process)")
        per_rank = distill.batch_size / (world * distill.grad_accum)
        if per_rank != int(per_rank):
            raise ConfigError(f"distill.batch_size={distill.batch_size} does not split over {world} processes x "
                              f"distill.grad_accum={distill.grad_accum}; use a multiple of {world * distill.grad_accum}")
        device = torch.device(config.device)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank if world > 1 else (device.index or 0))  # one GPU per process
            torch.cuda.set_device(device)
        owns_group = False
        if strategy != "none" and not dist.is_initialized():
            backend = settings.backend if settings.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
            timeout = datetime.timedelta(minutes=settings.timeout_minutes)
            if "MASTER_ADDR" in os.environ:
                dist.init_process_group(backend, timeout=timeout, rank=rank, world_size=world,
                                        device_id=device if device.type == "cuda" else None)
            else:  # one process asked for ddp/fsdp without torchrun: an in-memory group of one
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
            owns_group = True
        return cls(strategy, rank, world, device, config.performance, settings.shard_teacher, owns_group)

    def stop(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n_local: int) -> slice:
        """This rank's rows of a global batch of ``n_local * world`` rows."""
        return slice(self.rank * n_local, (self.rank + 1) * n_local)

    # ---- models ----------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, trainable: bool = True) -> nn.Module:
        """Activation checkpointing (trainable models), torch.compile, then DDP or FSDP2.

        The frozen teacher is never wrapped for gradients; under FSDP it is sharded to save memory."""
        if trainable and self.performance.activation_checkpointing:
            enable_activation_checkpointing(model)
        if self.performance.compile:
            for part in find_blocks(model) or [model]:
                part.compile(backend=self.performance.compile_backend)  # in place: state_dict keys unchanged
        if self.strategy == "ddp" and trainable:
            return nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False,       # buffers start equal (synced at init) and are not trained
                gradient_as_bucket_view=True)     # no second copy of the gradients
        if self.strategy == "fsdp" and (trainable or self.shard_teacher):
            from torch.distributed.fsdp import fully_shard
            # the engine never changes a model's output in place, which is what this warning is about
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
            for block in find_blocks(model) or []:
                fully_shard(block, mesh=self.mesh)  # one all-gather per block, not the whole model at once
            fully_shard(model, mesh=self.mesh)
        return model

    def micro_batches(self, n: int, model: nn.Module) -> Iterator[int]:
        """range(n), with gradient synchronisation across ranks only in the last micro-batch's backward."""
        for i in range(n):
            self._sync_gradients(model, i == n - 1)
            yield i

    @staticmethod
    def _sync_gradients(model: nn.Module, on: bool) -> None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model.require_backward_grad_sync = on  # what DDP.no_sync() sets; read at forward time
        elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2 module
            model.set_requires_gradient_sync(on)

    # ---- collectives (no-ops on one process) ------------------------------------------------------
    def _reduce(self, value: Tensor | float, op) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float64, device=self._comm_device()).clone()
        if self.world > 1:
            dist.all_reduce(t, op=op)
        return t

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def all_true(self, flag: bool | Tensor) -> bool:
        """True on every rank iff ``flag`` is true on every rank (ranks must agree to skip a batch)."""
        if self.world == 1:
            return bool(flag)
        return bool(self._reduce(float(bool(flag)), dist.ReduceOp.MIN))

    def any_rank(self, flag: Tensor) -> Tensor:
        """A device flag true on every rank iff it is true on some rank (no host read)."""
        if self.world == 1:
            return flag
        return self._reduce(flag.double(), dist.ReduceOp.MAX).to(flag.device) > 0

    def share(self, count: Tensor) -> Tensor | float:
        """count * world / (sum of count over ranks): weights a per-rank mean so that the average over
        ranks (what DDP/FSDP compute) is the mean over every rank's items. A device tensor: no host read."""
        if self.world == 1:
            return 1.0
        count = count.detach().double()
        total = self._reduce(count, dist.ReduceOp.SUM).to(count.device)
        return (count * self.world / total.clamp_min(1.0)).float()

    def mean(self, logs: dict[str, float | Tensor]) -> dict[str, float]:
        """The logs averaged over ranks, as numbers (a host read)."""
        names = list(logs)  # the same keys, in the same order, on every rank
        values = torch.stack([torch.as_tensor(logs[k], dtype=torch.float64).to(self._comm_device()) for k in names])
        values = self._reduce(values, dist.ReduceOp.SUM) / self.world
        return dict(zip(names, values.tolist()))

    def max(self, value: float) -> float:
        return value if self.world == 1 else float(self._reduce(value, dist.ReduceOp.MAX))

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (only used at checkpoint time)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def on_main(self, fn, what: str):
        """``fn()`` on rank 0 only (file writes). Every rank learns whether it worked, so when rank 0
        fails (disk full, read-only folder) all stop with an error instead of waiting on it."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # re-raised below, after the other ranks were told
                error = e
        if not self.all_true(error is None):
            if error is not None:
                raise error
            raise DimoError(f"rank 0 could not {what}; its error is printed above")
        return result

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # ---- state: full tensors on disk, shards in memory --------------------------------------------
    def full_state(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Gather sharded (DTensor) entries; the full dict is kept on rank 0 only (host memory)."""
        out = {}
        for k, v in tensors.items():
            if _is_dtensor(v):
                v = v.full_tensor().cpu()  # a collective: every rank walks the same keys in the same order
            if self.is_main:
                out[k] = v
        return out

    def shard_like(self, like: Tensor, full: Tensor) -> Tensor:
        """``full`` cut the way ``like`` (a parameter) is sharded; as is when ``like`` is not sharded."""
        if _is_dtensor(like) and tuple(full.shape) == tuple(like.shape):
            from torch.distributed.tensor import distribute_tensor
            # every rank read the same file: cut locally, no scatter from rank 0 (src_data_rank=None)
            return distribute_tensor(full.to(like.device_mesh.device_type).to(like.dtype), like.device_mesh,
                                     like.placements, src_data_rank=None)
        return full

    def load_module(self, model: nn.Module, state: dict[str, Tensor], source: str,
                    required: set[str] | None = None) -> None:
        from .checkpoint import load_state_dict_strict
        module = unwrap(model)
        own = module.state_dict()
        state = {k: self.shard_like(own[k], v) if k in own else v for k, v in state.items()}
        load_state_dict_strict(module, state, source, required)


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def as_local_scalar(t: Tensor) -> Tensor:
    """A gradient norm as a plain tensor (FSDP's clip_grad_norm_ returns a replicated DTensor)."""
    return t.full_tensor() if _is_dtensor(t) else t


# ---- per-model switches ----------------------------------------------------------------------------
BLOCK_LIST_NAMES = ("blocks", "layers", "h", "transformer_blocks", "single_transformer_blocks")


def find_layers(model: nn.Module) -> list[nn.Module] | None:
    """The model's layer list: ModuleList attributes with a usual name (several for two-stream models),
    else the ModuleList holding the most parameters; None when there is none."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        return None
    named = [m for name, m in lists if name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES]
    if named:
        return [layer for m in named for layer in m]
    return list(max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))[1])


def find_blocks(model: nn.Module) -> list[nn.Module] | None:
    """The modules a forward pass calls one after another: the layers, or the parts of a layer that
    is a plain container (MaskGit's layers are ModuleList([attention, MLP]), which has no forward)."""
    layers = find_layers(model)
    if layers is None:
        return None
    blocks = []
    for layer in layers:
        if isinstance(layer, nn.ModuleDict):
            blocks += list(layer.values())
        elif isinstance(layer, nn.ModuleList):
            blocks += list(layer)
        else:
            blocks.append(layer)
    return blocks


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward: the model's own switch if it has one
    (transformers' ``gradient_checkpointing_enable``), else torch.utils.checkpoint around every block."""
    if callable(getattr(model, "gradient_checkpointing_enable", None)):
        model.gradient_checkpointing_enable()
        return
    blocks = find_blocks(model)
    if not blocks:
        raise ConfigError(f"performance.activation_checkpointing: {type(model).__name__} has no list of blocks "
                          f"(nn.ModuleList) and no gradient_checkpointing_enable(); turn it off")
    for block in blocks:
        block.forward = functools.partial(_checkpointed, block.forward)  # instance attribute: keys unchanged


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # no backward, nothing to save memory on
        return forward(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)  # dropout replayed: RNG state preserved
