"""Rebuild the committed assets of the Fashion-MNIST bench (one CPU thread, deterministic per seed).

    python -m dimo_fmnist.build_assets tokenizer    # assets/fmnist_patch_vq.safetensors (~1 min)
    python -m dimo_fmnist.build_assets classifier   # assets/fmnist_cnn.safetensors (~8 min)
    python -m dimo_fmnist.build_assets tokenizer --codebook-size 1024 \
        --out plugins/dimo_meissonic/assets/fmnist_patch_vq_1024.safetensors   # the meissonic default's

Each file records the command that built it in its safetensors metadata (``command``).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from dimo_core.assets import asset_parser

from . import classifier, patch_vq
from .fashion_mnist import load_split


def build_tokenizer(out: Path, codebook_size: int, patch_size: int, iters: int, seed: int) -> None:
    train_images, _ = load_split("train")
    test_images, _ = load_split("test")
    start = time.time()
    tok = patch_vq.train_patch_vq(train_images, codebook_size, patch_size, iters=iters, seed=seed)
    recon = tok.decode(tok.encode(test_images))
    mse = ((recon - test_images) ** 2).mean().item()
    psnr = 10 * torch.log10(torch.tensor(1 / mse)).item()
    print(f"codebook {codebook_size}, patch {patch_size}: test MSE {mse:.5f}, PSNR {psnr:.2f} dB, "
          f"{time.time() - start:.0f} s")
    tok.save(out, test_mse=round(mse, 6), test_psnr_db=round(psnr, 3), kmeans_iters=iters, seed=seed,
             command=tokenizer_command(codebook_size, patch_size, iters, seed))
    print(f"wrote {out}")


def tokenizer_command(codebook_size: int, patch_size: int, iters: int, seed: int) -> str:
    return (f"python -m dimo_fmnist.build_assets tokenizer --codebook-size {codebook_size} "
            f"--patch-size {patch_size} --iters {iters} --seed {seed}")


def classifier_command(epochs: int, seed: int) -> str:
    return f"python -m dimo_fmnist.build_assets classifier --epochs {epochs} --seed {seed}"


def build_classifier(out: Path, epochs: int, seed: int) -> None:
    train, test = load_split("train"), load_split("test")
    net, meta = classifier.train_classifier(train, test, epochs=epochs, seed=seed)
    features, _ = classifier.features_and_probs(net, test[0])
    classifier.save_classifier(out, net, features, {
        **meta, "reference_split": "test", "seed": seed, "command": classifier_command(epochs, seed)})
    print(f"wrote {out} (test accuracy {meta['test_accuracy']:.4f})")


def main(argv: list[str] | None = None) -> None:
    parser, sub = asset_parser("dimo_fmnist.build_assets", __doc__)
    tok = sub.add_parser("tokenizer", help="k-means patch VQ codebook")
    tok.add_argument("--codebook-size", type=int, default=256)
    tok.add_argument("--patch-size", type=int, default=4)
    tok.add_argument("--iters", type=int, default=25, help="Lloyd iterations")
    tok.add_argument("--seed", type=int, default=0)
    tok.add_argument("--out", type=Path, default=patch_vq.BUNDLED)
    cls = sub.add_parser("classifier", help="evaluation CNN and test-split reference statistics")
    cls.add_argument("--epochs", type=int, default=5)
    cls.add_argument("--seed", type=int, default=0)
    cls.add_argument("--out", type=Path, default=classifier.BUNDLED)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.asset == "tokenizer":
        build_tokenizer(args.out, args.codebook_size, args.patch_size, args.iters, args.seed)
    else:
        build_classifier(args.out, args.epochs, args.seed)


if __name__ == "__main__":
    main()
