"""Configuration presets of the maskgit plugin, as plain dicts (keys follow dimo_core.config).

- ``maskgit`` (applied by ``plugins=maskgit``): the CPU-sized default. Fashion-MNIST through a
  4 x 4 patch VQ (7 x 7 = 49 codes of 256), the v1.0 MaskGit transformer at a small size trained
  by ``dimo train-teacher plugins=maskgit``, evaluated with the committed Fashion-MNIST CNN.
- ``maskgit_imagenet256``: the released ImageNet 256 teacher with the Di[M]O release defaults.
  Point ``teacher.path`` and ``tokenizer.path`` at the downloaded files (see README.md).
"""
from __future__ import annotations

from .teacher import BUNDLED as BUNDLED_TEACHER

# The small teacher: the same MaskTransformer class as ImageNet, 0.9 M parameters. No dropout: it is
# far from overfitting on CPU budgets, and dropout costs a quarter of a CPU training step.
FMNIST_TEACHER = {"hidden": 128, "depth": 4, "heads": 4, "mlp": 512, "codebook_size": 256,
                  "num_classes": 10, "tokens": 49, "dropout": 0.0}

# Parameters the release keeps frozen in generator and aux (the tied head is the embedding).
RELEASE_FROZEN = ["tok_emb.weight", "bias", "pos_emb"]

# MaskGit's own sampler: arccos schedule, CFG c + w (c - u) ramped up from 0, Gumbel confidence noise.
MASKGIT_SAMPLER = {"name": "confidence", "schedule": "arccos", "temperature": 1.0, "r_temp": 4.5,
                   "guidance_ramp": True, "guidance_form": "maskgit"}

MASKGIT = {
    "teacher": {"name": "maskgit", "path": str(BUNDLED_TEACHER), **FMNIST_TEACHER},
    "tokenizer": {"name": "fmnist_patch_vq"},
    "conditions": {"name": "class_labels", "num_classes": 10, "class_names": "fashion_mnist"},
    "dataset": {"name": "fashion_mnist"},
    "train_teacher": {
        "steps": 2500,                 # ~25 min on one CPU thread (0.6 s per step)
        "batch_size": 64,
        "lr": 1e-3,
        "warmup_steps": 100,
        "schedule": "arccos",
        "masking": "bernoulli",        # per-token masking at the scheduled ratio, as MaskGit
        "loss_positions": "all",       # MaskGit's loss: every position, visible ones learn to copy
        "label_smoothing": 0.1,
        "cond_drop": 0.1,              # null class 10% of the time, for guidance
    },
    "distill": {                       # measured on this teacher: README.md "Distillation recipe"
        "steps": 750,                  # best measured; past ~1000 logits grow and FD worsens (README)
        "batch_size": 32,              # progress per step was the same at 64: half the cost per step
        "divergence": {"name": "fkl"},
        "init": {"name": "random_mask", "r_init": 0.6},
        # No embedding noise: this teacher's token embeddings have element std 0.07, so the
        # release's sigma 0.1 drowns them. FD 2.33 / 2.63 / 2.37 (three seeds) vs 3.33 / 4.21 / 3.66.
        "sigma": 0.0,
        "schedule": "arccos",
        "guidance": 2.0,
        "guidance_form": "standard",   # u + w (c - u), as the release guides the teacher in training
        "lr_generator": 6e-4,          # the release's 1e-5 is for 50k steps; 1.5e-3 diverged here
        "lr_aux": 2e-3,                # the aux model must track the generator: faster than it
        "aux_samples": "reuse",        # the paper's choice; saves a generator pass
        "warmup_steps": 100,
        "min_lr_ratio": 0.05,          # cosine decay: FD 3.33 / 4.21 (two seeds) vs 4.00 / 3.94 constant
        "grad_clip": 1.0,
        "ema": 0.998,                  # ramped (1+s)/(10+s): a window of ~s/9 steps, ~280 at the end
        # Nothing frozen, unlike the release: with the tied embedding frozen, this small teacher's
        # copy path (a visible code's own embedding, carried by the residual stream to the tied head)
        # keeps the random codes of x_init in the samples; FD 14.2 -> 7.1 at 250 steps once trainable.
        "frozen": [],
        "ckpt_every": 250,
    },
    # The student's output temperature 0.3: its stray patches are low-probability draws (FD 5.1 -> 3.9
    # for one student at 1.0 -> 0.3; argmax gave the same); the teacher's best stays at 1.0 (README.md).
    "sample": {"sampler": MASKGIT_SAMPLER, "source": "both", "steps": 8, "guidance": 3.0, "n": 20,
               "temperature": 0.3},
    "eval": {
        "after_run": True,             # `dimo run plugins=maskgit` ends with the report and the grid
        "student_temperature": 0.3,
        "teacher_steps": [1, 2, 4, 8, 16, 32],
        "student_steps": [1],
        "samples": 2000,
        "batch_size": 500,
        "sampler": MASKGIT_SAMPLER,
        "guidance": 3.0,
        "metrics": [{"name": "image_quality"}],
        "writer": {"name": "image_grid", "class_names": "fashion_mnist"},
        "grid": 10,
    },
}

# Di[M]O release defaults for the released MaskGit (valeoai v1.0) on ImageNet 256.
MASKGIT_IMAGENET256 = {
    "teacher": {"name": "maskgit", "path": "pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_256.pth",
                "hidden": 768, "depth": 24, "heads": 16, "mlp": 3072, "codebook_size": 1024,
                "num_classes": 1000, "tokens": 256, "dropout": 0.1},
    "tokenizer": {"name": "vqgan", "path": "pretrained_maskgit/VQGAN"},
    "conditions": {"name": "class_labels", "num_classes": 1000},
    "distill": {
        "steps": 50_000,               # the paper evaluates at 30k
        "batch_size": 64,
        "divergence": {"name": "fkl"},
        "init": {"name": "random_mask", "r_init": 0.6},
        "sigma": 0.1,
        "schedule": "arccos",
        "guidance": 2.0,
        "guidance_form": "standard",
        "lr_generator": 1e-5,
        "lr_aux": 1e-5,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "warmup_steps": 100,
        "grad_clip": 1.0,
        "ema": 0.9999,
        "frozen": RELEASE_FROZEN,
        "label_smoothing": 0.1,
    },
    "dtype": "bfloat16",
    "device": "cuda",
    "sample": {"sampler": MASKGIT_SAMPLER, "steps": 8, "guidance": 3.0, "n": 16},
    "eval": {
        "teacher_steps": [1, 2, 4, 8, 16],
        "student_steps": [1],
        "samples": 50_000,
        "batch_size": 250,
        "sampler": MASKGIT_SAMPLER,
        "guidance": 3.0,               # 8 steps, w = 3, r_temp = 4.5: FID 6.80 as released
        "metrics": [{"name": "image_quality", "features": "inception",
                     "inception_reference": "VIRTUAL_imagenet256_labeled.npz"}],
        "writer": {"name": "image_grid", "class_names": None},  # ImageNet ids as column titles
        "grid": 8,
    },
}

PRESETS = {"maskgit": MASKGIT, "maskgit_imagenet256": MASKGIT_IMAGENET256}
