"""Timing that holds on CUDA (every measurement synchronises before and after) and the FLOP counts
behind the throughput and model-FLOPs-utilisation rows."""
import time

import torch
from torch import nn

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by a substring of the device name
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def synced(fn):
    """``fn`` followed by a device synchronisation: what pytest-benchmark times is the work itself."""
    def run():
        out = fn()
        sync()
        return out
    return run


def median_seconds(fn, repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()   # nothing queued before the clock starts
        tic = time.perf_counter()
        fn()
        sync()   # everything queued by fn done before it stops
        times.append(time.perf_counter() - tic)
    return sorted(times)[len(times) // 2]


def toy_forward_flops(model: nn.Module, batch: int) -> float:
    """Matmul FLOPs of one SmallMDM forward: 2 x (linear weights) per token, plus attention's two
    (L x L x d) products per layer; the L tokens and the class token."""
    tokens = model.seq_len + 1
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    dim = model.position_embedding.shape[1]
    attention = 2 * 2 * tokens * tokens * dim * len(model.blocks)
    return batch * (2 * linear * tokens + attention)


def step_forward_passes(guided: bool, aux_samples: str) -> int:
    """Forward-pass equivalents of one engine step (a backward counts two): generator forward and
    backward 3, teacher 1 (2 with guidance: a doubled batch), aux forward 1, aux forward and
    backward 3, and one more generator forward for fresh aux samples."""
    return 3 + (2 if guided else 1) + 1 + 3 + (1 if aux_samples == "fresh" else 0)


def throughput_rows(step_s: float, batch: int, seq_len: int, step_flops: float, dtype: str) -> dict:
    """samples/s, tokens/s, achieved model TFLOP/s and, for bf16 on a GPU of known peak, the MFU."""
    rows = {"samples_per_s": batch / step_s, "tokens_per_s": batch * seq_len / step_s,
            "model_tflops_per_s": step_flops / step_s / 1e12}
    if torch.cuda.is_available() and dtype == "bfloat16":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
        if peak:
            rows["mfu"] = step_flops / step_s / peak
    return rows
