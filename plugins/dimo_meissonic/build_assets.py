"""Rebuild the committed Fashion-MNIST assets of the meissonic plugin (a folder in the release layout).

    python -m dimo_meissonic.build_assets text
        assets/fmnist/tokenizer/     word-level CLIP tokenizer of every caption word
        assets/fmnist/text_encoder/  CLIPTextModelWithProjection at toy size, pretrained as a tiny CLIP
                                     against Fashion-MNIST images (tiny_clip.py); frozen afterwards
    python -m dimo_fmnist.build_assets tokenizer --codebook-size 1024 \
        --out plugins/dimo_meissonic/assets/fmnist_patch_vq_1024.safetensors
        the 1024-code patch VQ (the Fashion-MNIST bench's builder; its own default has 256 codes)
    python -m dimo_meissonic.build_assets transformer --teacher runs/meissonic-teacher/teacher.safetensors
        assets/fmnist/transformer/   config.json + diffusion_pytorch_model.safetensors, from the output
                                     of `dimo train-teacher plugins=meissonic` (see README.md)

The transformer then learns to read the frozen encoder's features, as Meissonic reads a frozen CLIP.
``--clip-steps 0`` keeps the encoder random (what the first bundled teacher used; it generalised
poorly to held-out caption templates, see README.md).
"""
from __future__ import annotations

from pathlib import Path

import torch

from dimo_core.assets import asset_parser
from dimo_core.checkpoint import load_tensors

from .plugin import BUNDLED_FOLDER
from .conditions import caption_words
from .teacher import build_teacher, save_transformer_folder
from .text import build_clip_tokenizer, tiny_clip_text_config
from .tiny_clip import train_text_encoder


def build_text(folder: Path, projection_dim: int, max_length: int, hidden_size: int, layers: int, seed: int,
               clip_steps: int, root: str | None = None) -> None:
    from transformers import CLIPTextModelWithProjection
    tokenizer = build_clip_tokenizer(caption_words(), max_length)
    torch.manual_seed(seed)
    config = tiny_clip_text_config(len(tokenizer), max_length, projection_dim, hidden_size, layers)
    encoder = CLIPTextModelWithProjection(config).eval()
    tokenizer.save_pretrained(str(folder / "tokenizer"))  # before training sets its padding state
    if clip_steps:
        from dimo_fmnist.fashion_mnist import load_split
        images, labels = load_split("train", root)
        train_text_encoder(encoder, tokenizer, images, labels, steps=clip_steps, seed=seed, max_length=max_length)
    encoder.save_pretrained(str(folder / "text_encoder"))
    n = sum(p.numel() for p in encoder.parameters())
    print(f"wrote {folder}/tokenizer ({len(tokenizer)} tokens) and {folder}/text_encoder ({n / 1e3:.0f} k parameters, "
          f"{clip_steps} tiny-CLIP steps)")


def build_transformer(folder: Path, teacher_file: Path) -> None:
    """The trained teacher's weights with its architecture (from the file's metadata) as a release folder."""
    state, meta = load_tensors(teacher_file)
    spec = {k: v for k, v in meta["teacher"].items() if k not in ("name", "path", "grid_size", "timestep",
                                                                   "reference_steps")}
    teacher = build_teacher(teacher_file, **spec)
    save_transformer_folder(teacher, folder / "transformer", train_teacher=meta.get("train_teacher"),
                            steps=meta.get("steps"), source=str(teacher_file))
    n = sum(p.numel() for p in teacher.parameters())
    print(f"wrote {folder}/transformer ({n / 1e6:.2f} M parameters, {meta.get('steps')} training steps)")


def main(argv: list[str] | None = None) -> None:
    parser, sub = asset_parser("dimo_meissonic.build_assets", __doc__)
    text = sub.add_parser("text", help="CLIP tokenizer and the tiny-CLIP-pretrained text encoder")
    text.add_argument("--projection-dim", type=int, default=64, help="= the transformer's hidden size")
    text.add_argument("--max-length", type=int, default=16, help="prompt tokens, padded")
    text.add_argument("--hidden-size", type=int, default=64)
    text.add_argument("--layers", type=int, default=2)
    text.add_argument("--seed", type=int, default=0)
    text.add_argument("--clip-steps", type=int, default=1000, help="tiny-CLIP pretraining steps (0: random)")
    text.add_argument("--fashion-mnist", default=None, help="folder of the Fashion-MNIST idx files")
    trans = sub.add_parser("transformer", help="package a trained teacher.safetensors as transformer/")
    trans.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=BUNDLED_FOLDER)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.asset == "text":
        build_text(args.out, args.projection_dim, args.max_length, args.hidden_size, args.layers, args.seed,
                   args.clip_steps, args.fashion_mnist)
    else:
        build_transformer(args.out, args.teacher)


if __name__ == "__main__":
    main()
