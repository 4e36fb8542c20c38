"""Data-parallel scaling on CPU (gloo): one process with the global batch against two processes with
half of it each (same global batch, same seeds), one thread per process.

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_scaling.py -q -s

Strong-scaling efficiency = t(1 process) / (2 x t(2 processes)). On a shared 2-core machine the
number says as much about the neighbours as about dimo: read it with the load average it prints.
The numbers in docs/scaling.md were measured with this file.
"""
import os
import socket
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dimo_core.config import DistillConfig
from dimo_core.distributed import Parallel
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.init import RandomMaskInit
from dimo_core.conditions import ClassLabels
from dimo_core.mdm import SmallMDM
from timing import step_forward_passes, synced, throughput_rows, toy_forward_flops

GLOBAL_BATCH = 32
STEPS = 6  # timed, after 2 warm-up steps


def make_engine(parallel, batch=GLOBAL_BATCH):
    torch.manual_seed(0)
    teacher = SmallMDM(vocab_size=256, seq_len=64, num_classes=4, dim=256, depth=4, heads=4)  # benchmarks/conftest size
    cfg = DistillConfig(batch_size=batch, guidance=2.0, ema=0.999, warmup_steps=0)
    return DiMOEngine(teacher, ClassLabels(4), FKL(), RandomMaskInit(0.6), cfg, seed=0, parallel=parallel,
                      dtype="float32")


def _timed_steps(rank, world, strategy, port, out):
    torch.set_num_threads(1)
    synced = world > 1 and strategy != "independent"
    if synced:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        engine = make_engine(Parallel(strategy, rank, world))
    else:  # "independent": the same per-process work, no communication: what the CPUs allow
        engine = make_engine(Parallel(), GLOBAL_BATCH // world)
    for _ in range(2):
        engine.train_step()
    times = []
    for _ in range(STEPS):
        if synced:
            dist.barrier()
        tic = time.perf_counter()
        engine.train_step()
        times.append(time.perf_counter() - tic)
    if rank == 0:
        torch.save(sorted(times)[len(times) // 2], out)
    if synced:
        dist.destroy_process_group()


def median_step_seconds(world: int, strategy: str = "none") -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "t.pt")
        mp.start_processes(_timed_steps, args=(world, strategy, port, out), nprocs=world, start_method="fork")
        return torch.load(out)


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.is_initialized(),
                    reason="forks CPU processes, which autograd's device threads (started by the CUDA benchmarks "
                           "before) forbid; run alone: pytest benchmarks/test_scaling.py -k one_to_two")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_scaling_one_to_two_processes(benchmark, strategy):
    """The benchmark's own time is the whole two-process measurement (start-up included); the step
    times are in extra_info. "independent" runs the same per-process work without communication:
    on a shared machine it separates what the CPUs allow from what synchronisation costs."""
    one = median_step_seconds(1)
    independent = median_step_seconds(2, "independent")
    two = benchmark.pedantic(median_step_seconds, args=(2, strategy), rounds=1, iterations=1)
    efficiency = one / (2 * two)
    load = os.getloadavg()[0]
    benchmark.extra_info.update({"one_process_step_s": one, "two_process_step_s": two, "efficiency": efficiency,
                                 "independent_half_batch_step_s": independent,
                                 "samples_per_s_one": GLOBAL_BATCH / one, "samples_per_s_two": GLOBAL_BATCH / two,
                                 "load_average": load, "cpus": os.cpu_count()})
    print(f"\n[{strategy}] step: 1 process {one * 1e3:.0f} ms, 2 processes {two * 1e3:.0f} ms -> speed-up "
          f"{one / two:.2f}x, efficiency {efficiency:.0%}; 2 processes without communication {independent * 1e3:.0f} ms "
          f"(synchronisation costs {(two - independent) * 1e3:.0f} ms); load average {load:.1f} on {os.cpu_count()} CPUs")
    assert two > 0 and one > 0


# ---- on a GPU: bf16 against fp32 throughput, activation checkpointing against peak memory ----------
GPU_MODEL = dict(vocab_size=1024, seq_len=256, num_classes=1000, dim=768, depth=24, heads=16)  # MaskGit-sized
GPU_BATCH = 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("checkpointing", [False, True], ids=["ac_off", "ac_on"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_precision_and_checkpointing(benchmark, dtype, checkpointing):
    """python -m pytest benchmarks/test_scaling.py -k gpu -s: samples/s and peak memory against the estimate."""
    from dimo_core.config import PerformanceConfig
    from dimo_core.memory import ModelShape, estimate_memory
    torch.manual_seed(0)
    teacher = SmallMDM(**GPU_MODEL).cuda()
    cfg = DistillConfig(batch_size=GPU_BATCH, guidance=2.0, ema=0.9999, warmup_steps=0)
    performance = PerformanceConfig(activation_checkpointing=checkpointing)
    engine = DiMOEngine(teacher, ClassLabels(1000), FKL(), RandomMaskInit(0.6), cfg, seed=0, dtype=dtype,
                        parallel=Parallel(device="cuda", performance=performance))
    engine.train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(synced(engine.train_step), rounds=5, warmup_rounds=1)
    peak = torch.cuda.max_memory_allocated()
    estimate = estimate_memory(ModelShape.of(teacher), batch_per_rank=GPU_BATCH, dtype=dtype,
                               activation_checkpointing=checkpointing, cuda=False).total
    step = benchmark.stats.stats.median
    passes = step_forward_passes(True, cfg.aux_samples) + (1 if checkpointing else 0)  # + the recomputed forward
    rows = throughput_rows(step, GPU_BATCH, teacher.seq_len, toy_forward_flops(teacher, GPU_BATCH) * passes, dtype)
    benchmark.extra_info.update({**rows, "peak_bytes": peak, "estimate_bytes": estimate,
                                 "device": torch.cuda.get_device_name()})
    print(f"\n[{dtype}, activation checkpointing {'on' if checkpointing else 'off'}] {GPU_BATCH / step:.1f} samples/s, "
          f"peak {peak / 2**30:.2f} GiB (estimate without CUDA context {estimate / 2**30:.2f} GiB) "
          f"on {torch.cuda.get_device_name()}; " + ", ".join(f"{k} {v:.3g}" for k, v in rows.items()))
