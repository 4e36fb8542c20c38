"""Presets as plain dicts, merged over dimo's defaults (`plugins=llada` applies LLADA).

LLADA: the bundled CPU-sized teacher (assets/teacher, trained here on fortunes; see README.md).
LLADA_8B: GSAI-ML/LLaDA-8B-* on one 80 GB GPU; "???" marks values the user must give.
"""
from pathlib import Path

from dimo_core import REQUIRED  # "???": dimo refuses to run until the user gives the value

ASSETS = Path(__file__).parent / "assets"
BUNDLED_TEACHER = str(ASSETS / "teacher")       # model + tokenizer, Hugging Face folder
BUNDLED_REFERENCE = str(ASSETS / "reference")   # autoregressive scorer + the same tokenizer

PROMPT_LEN, RESPONSE_LEN = 16, 32                # tokens: ~45 and ~90 characters of English

LLADA = {
    "teacher": {"name": "hf_mdm", "path": BUNDLED_TEACHER, "seq_len": RESPONSE_LEN},
    "tokenizer": {"name": "hf", "path": BUNDLED_TEACHER},
    "conditions": {"name": "prompts", "prompt_len": PROMPT_LEN},
    "dataset": {"name": "text_pairs", "prompt_len": PROMPT_LEN, "response_len": RESPONSE_LEN},
    "train_teacher": {                           # how assets/teacher was trained (README.md: exact command)
        "steps": 1200, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100, "min_lr_ratio": 0.1,
        "schedule": "linear",                    # LLaDA's forward process: mask ratio t ~ U(0, 1)
        "masking": "bernoulli",
        "loss_positions": "all",                 # visible positions learn to copy: the generator's random
                                                 # init tokens get trained outputs (ALGORITHM.md)
        "label_smoothing": 0.0,                  # text: keep the teacher's likelihood sharp
        "cond_drop": 0.1,                        # prompt -> all [MASK], so guidance has an unconditional branch
    },
    "distill": {                                 # what was tried and measured: README.md
        "steps": 1000, "batch_size": 32, "lr_generator": 2e-4, "lr_aux": 1e-3, "warmup_steps": 100,
        "init": {"name": "random_mask", "r_init": 0.9},   # few random tokens: text around 13 random
                                                          # words (r_init 0.6) is not text the teacher knows
        "sigma": 0.1,
        "schedule": "linear",                    # the teacher's own masking schedule
        "guidance": 1.0,
        "aux_samples": "reuse",
        "ema": 0.99,
        "frozen": ["model.model.embed_tokens.*", "model.lm_head.*"],   # as the release freezes them
        "log_every": 50, "ckpt_every": 250,
    },
    # The student's output temperature: 0.3 measured best against the teacher at temperature 1 (gen-PPL
    # 850 -> 229, entropy 3.32 -> 3.03 against the full-step teacher's 2.98; README.md); the teacher keeps 1.
    "sample": {"sampler": {"name": "llada", "temperature": 1.0}, "steps": 32, "n": 16, "temperature": 0.3},
    "eval": {
        "sampler": {"name": "llada", "temperature": 1.0},   # one block: 1..32 steps all valid
        "student_temperature": 0.3,
        "teacher_steps": [1, 2, 4, 8, 16, 32],
        "samples": 1000, "batch_size": 250,
        "metrics": [{"name": "text_quality"}],
        "writer": {"name": "text_examples", "n": 8},
        "grid": 8,
    },
}

LLADA_8B = {
    "device": "cuda",
    "dtype": "bfloat16",
    "teacher": {"name": "hf_mdm", "path": REQUIRED,  # a local GSAI-ML/LLaDA-8B-Base or -Instruct folder
                "trust_remote_code": True, "dtype": "bfloat16", "seq_len": 128,
                "gradient_checkpointing": True, "lora_rank": 16},
    "tokenizer": {"name": "hf", "path": "${teacher.path}", "trust_remote_code": True},
    "conditions": {"name": "prompts", "path": REQUIRED, "prompt_len": 128},
    "distill": {"steps": 5000, "batch_size": 8, "grad_accum": 2, "lr_generator": 1e-5, "lr_aux": 1e-5,
                "init": {"name": "random_mask", "r_init": 0.6}, "sigma": 0.1, "schedule": "linear",
                "guidance": 1.0, "ema": 0.0},
    "sample": {"sampler": {"name": "llada", "block_length": 32, "temperature": 0.0}, "steps": 128, "n": 4},
    "eval": {"sampler": {"name": "llada", "block_length": 128, "temperature": 1.0},
             "teacher_steps": [1, 2, 4, 8, 16, 32, 64, 128], "samples": 256, "batch_size": 16,
             "metrics": [{"name": "text_quality", "reference": REQUIRED}],  # a local causal LM folder (e.g. GPT-2 large)
             "writer": {"name": "text_examples", "n": 8}},
}
