"""Rebuild the committed text assets of the llada plugin (one CPU thread, deterministic per seed).

    python -m dimo_llada.build_assets tokenizer   # BPE on the train split -> assets/{teacher,reference}
    python -m dimo_llada.build_assets teacher     # `dimo train-teacher plugins=llada`, exported as an HF folder
    python -m dimo_llada.build_assets reference   # causal scorer on the reference split -> assets/reference
    python -m dimo_llada.build_assets check       # real held-out responses vs the teacher at 1..32 steps

The teacher is trained by the core's train-teacher loop with the preset's ``train_teacher``
section; this script only exports its safetensors into a Hugging Face folder (float16 weights,
config.json with mask_token_id, tokenizer), the layout `hf_mdm` loads real checkpoints from.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from dimo_core.assets import asset_parser
from dimo_core.presets import load_preset

from .corpus import builtin_documents
from .metrics import BUNDLED_REFERENCE
from .plugin import PRESETS
from .teacher import ASSETS, BUNDLED_TEACHER

PROMPT_LEN = load_preset(PRESETS / "llada.yaml")["conditions"]["prompt_len"]
RESPONSE_LEN = load_preset(PRESETS / "llada.yaml")["teacher"]["seq_len"]


def build_tokenizer(vocab_size: int, sources: list[str]) -> None:
    from .tokenizer import HFTokenizer, save_tokenizer, train_bpe_tokenizer
    start = time.time()
    tokenizer = train_bpe_tokenizer(builtin_documents(sources, "train"), vocab_size)
    for folder in (BUNDLED_TEACHER, BUNDLED_REFERENCE):
        save_tokenizer(tokenizer, folder)
    hf = HFTokenizer.from_folder(BUNDLED_TEACHER)
    chars = sum(len(d) for d in builtin_documents(sources, "eval"))
    tokens = sum(len(hf.ids(d)) for d in builtin_documents(sources, "eval"))
    print(f"tokenizer: {len(tokenizer)} entries, {chars / tokens:.2f} characters per token on the eval split, "
          f"{time.time() - start:.0f} s")


def masked_eval_loss(teacher, tokenizer, batches: int = 20, batch_size: int = 100) -> float:
    """Cross-entropy (nats/token) of the teacher on masked response positions of eval-split pairs,
    mask ratio t ~ U(0, 1) per row, clean prompt: how well it predicts held-out text."""
    from .data import BuiltinText, TextPairs
    pairs = TextPairs(BuiltinText(tokenizer), PROMPT_LEN, RESPONSE_LEN)
    rng = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(batches):
            tokens, cond = pairs.sample(batch_size, rng, "eval")
            masked = torch.rand(tokens.shape, generator=rng) < torch.rand(batch_size, 1, generator=rng)
            logits = teacher(tokens.masked_fill(masked, teacher.mask_id), cond)
            nll = torch.nn.functional.cross_entropy(logits[masked], tokens[masked], reduction="sum")
            total, count = total + float(nll), count + int(masked.sum())
    return total / count


def build_teacher(out_dir: Path, overrides: list[str]) -> None:
    from dimo_core.checkpoint import load_tensors
    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.train_teacher import train_teacher

    from dimo_core.registry import registry_with

    from . import plugin
    registry = registry_with("llada", plugin)
    args = ["plugins=llada", f"out_dir={out_dir}", *overrides]
    ctx = Context(load_config(args, registry), registry)
    start, cpu_start = time.time(), time.process_time()
    path = train_teacher(ctx, progress=False)
    minutes, cpu_minutes = (time.time() - start) / 60, (time.process_time() - cpu_start) / 60
    teacher = ctx.teacher.eval()
    state, _ = load_tensors(path)
    teacher.load_state_dict(state)
    log = [json.loads(line) for line in (out_dir / "teacher_log.jsonl").read_text().splitlines()]
    eval_loss = masked_eval_loss(teacher, ctx.tokenizer)
    teacher.save_pretrained(BUNDLED_TEACHER, ctx.tokenizer, dtype="float16")
    summary = {"command": "python -m dimo_llada.build_assets teacher " + " ".join(overrides),
               "train_minutes": round(minutes, 1), "train_cpu_minutes": round(cpu_minutes, 1),
               "final_train_loss": log[-1]["loss"],
               "eval_masked_nll": round(eval_loss, 4), "parameters": sum(p.numel() for p in teacher.parameters())}
    (ASSETS / "teacher_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def build_reference(steps: int, batch_size: int, lr: float, seed: int, architecture: dict) -> None:
    """Next-token training on windows of the reference split; validation perplexity on the eval split."""
    from .data import BuiltinText
    from .modeling import DimoReferenceLM, DimoReferenceLMConfig
    from .tokenizer import HFTokenizer, save_tokenizer
    tokenizer = HFTokenizer.from_folder(BUNDLED_REFERENCE, mask_id=-1)   # a causal LM needs no mask token
    text = BuiltinText(tokenizer)
    length = PROMPT_LEN + RESPONSE_LEN
    torch.manual_seed(seed)
    config = DimoReferenceLMConfig(vocab_size=len(tokenizer.hf), pad_token_id=tokenizer.pad_id,
                                   bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.hf.eos_token_id,
                                   **architecture)
    model = DimoReferenceLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng = torch.Generator().manual_seed(seed)
    warmup, start, cpu_start, log = 100, time.time(), time.process_time(), []
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        window = text.stream("reference").windows(batch_size, length, rng)
        loss = model(window, labels=window).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            val = reference_nll(model, text, "eval")
            log.append({"step": step + 1, "train_loss": round(loss.item(), 4), "eval_nll": round(val, 4)})
            print(log[-1], f"{time.time() - start:.0f} s", flush=True)
    model.to(torch.float16).save_pretrained(BUNDLED_REFERENCE)
    save_tokenizer(tokenizer.hf, BUNDLED_REFERENCE)
    summary = {"command": f"python -m dimo_llada.build_assets reference --steps {steps} --batch-size {batch_size} "
                          f"--lr {lr} --seed {seed}",
               "train_minutes": round((time.time() - start) / 60, 1),
               "train_cpu_minutes": round((time.process_time() - cpu_start) / 60, 1),
               "final_train_loss": log[-1]["train_loss"],
               "eval_nll": log[-1]["eval_nll"], "eval_perplexity": round(math.exp(log[-1]["eval_nll"]), 2),
               "parameters": sum(p.numel() for p in model.parameters()), "log": log}
    (ASSETS / "reference_training.json").write_text(json.dumps(summary, indent=2) + "\n")


def reference_nll(model, text, split: str, batches: int = 10, batch_size: int = 100) -> float:
    """Token-weighted NLL of windows of a split (the same fixed windows every call)."""
    rng = torch.Generator().manual_seed(4321)
    model.eval()
    with torch.no_grad():
        losses = [float(model(w, labels=w).loss) for w in
                  (text.stream(split).windows(batch_size, PROMPT_LEN + RESPONSE_LEN, rng) for _ in range(batches))]
    model.train()
    return sum(losses) / len(losses)


def check_teacher(samples: int, steps: list[int], seed: int, overrides: list[str]) -> None:
    """Held-out real responses against the bundled teacher at N steps, on the same eval prompts."""
    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.sample import draw_teacher

    from dimo_core.registry import registry_with

    from . import plugin
    registry = registry_with("llada", plugin)
    ctx = Context(load_config(["plugins=llada", *overrides], registry), registry)
    metric = ctx.build("metrics", ctx.config.eval.metrics[0], "eval.metrics[0]")
    sampler = ctx.build("samplers", ctx.config.eval.sampler, "eval.sampler")
    real, cond = ctx.dataset.sample(samples, torch.Generator().manual_seed(seed), split="eval")
    rows = [("real eval responses", real, 0.0)]
    for n in steps:
        start = time.time()
        tokens = draw_teacher(ctx, sampler, cond, samples, n, 1.0, torch.Generator().manual_seed(seed))
        rows.append((f"teacher {n} steps", tokens, (time.time() - start) / samples))
    print("| rows | gen_ppl | entropy | distinct_1 | distinct_2 | s/sample |\n|---|---|---|---|---|---|")
    for label, tokens, seconds in rows:
        m = metric(tokens, cond)
        print(f"| {label} | {m['gen_ppl']:.1f} | {m['entropy']:.3f} | {m['distinct_1']:.3f} | "
              f"{m['distinct_2']:.3f} | {seconds:.4f} |")
    for label, tokens, _ in rows[:1] + rows[-1:]:
        print(f"{label}: {ctx.tokenizer.decode(cond['input_ids'][0])!r} -> {ctx.tokenizer.decode(tokens[0])!r}")


def main(argv: list[str] | None = None) -> None:
    parser, sub = asset_parser("dimo_llada.build_assets", __doc__)
    tok = sub.add_parser("tokenizer", help="byte-level BPE on the train split")
    tok.add_argument("--vocab-size", type=int, default=2048)
    tok.add_argument("--sources", nargs="+", default=["fortunes"])
    teach = sub.add_parser("teacher", help="train the teacher with the core loop and export it")
    teach.add_argument("--out-dir", type=Path, default=Path("runs/llada_teacher"))
    teach.add_argument("overrides", nargs="*", help="key=value overrides of the preset (train_teacher.steps=...)")
    ref = sub.add_parser("reference", help="autoregressive scorer on the reference split")
    ref.add_argument("--steps", type=int, default=500)   # 800 overfits the 174k-token split (eval NLL up after 500)
    ref.add_argument("--batch-size", type=int, default=64)
    ref.add_argument("--lr", type=float, default=2e-3)
    ref.add_argument("--seed", type=int, default=0)
    ref.add_argument("--hidden-size", type=int, default=128)
    ref.add_argument("--layers", type=int, default=4)
    check = sub.add_parser("check", help="table: real eval responses vs the teacher at N steps")
    check.add_argument("--samples", type=int, default=500)
    check.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("overrides", nargs="*", help="key=value, e.g. eval.sampler.remasking=random")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.asset == "tokenizer":
        build_tokenizer(args.vocab_size, args.sources)
    elif args.asset == "teacher":
        build_teacher(args.out_dir, args.overrides)
    elif args.asset == "check":
        check_teacher(args.samples, args.steps, args.seed, args.overrides)
    else:
        build_reference(args.steps, args.batch_size, args.lr, args.seed,
                        dict(hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=4,
                             intermediate_size=args.hidden_size * 8 // 3 // 16 * 16, max_position_embeddings=256))


if __name__ == "__main__":
    main()
