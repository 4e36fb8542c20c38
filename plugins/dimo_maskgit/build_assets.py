"""Rebuild the committed Fashion-MNIST assets of the maskgit plugin.

    python -m dimo_maskgit.build_assets tokenizer    # assets/fmnist_patch_vq.safetensors (~1 min)
    python -m dimo_maskgit.build_assets classifier   # assets/fmnist_cnn.safetensors (~8 min)
    python -m dimo_maskgit.build_assets teacher [key=value ...]   # assets/fmnist_teacher.safetensors

Tokenizer and classifier run on one CPU thread and are deterministic for a given seed. ``teacher``
is ``dimo train-teacher plugins=maskgit [key=value ...]`` (the core's training loop, this plugin's
preset) followed by a copy of the result into assets/; it also works where the ``maskgit`` entry
point is not installed. README.md records the exact command that produced the committed teacher.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from . import classifier, patch_vq
from .fashion_mnist import load_split

ASSETS = Path(__file__).parent / "assets"


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
             command=f"python -m dimo_maskgit.build_assets tokenizer --codebook-size {codebook_size} "
                     f"--patch-size {patch_size} --iters {iters} --seed {seed}")
    print(f"wrote {out}")


def build_classifier(out: Path, epochs: int, seed: int) -> None:
    train, test = load_split("train"), load_split("test")
    net, meta = classifier.train_classifier(train, test, epochs=epochs, seed=seed)
    features, _ = classifier.features_and_probs(net, test[0])
    classifier.save_classifier(out, net, features, {
        **meta, "reference_split": "test", "seed": seed,
        "command": f"python -m dimo_maskgit.build_assets classifier --epochs {epochs} --seed {seed}"})
    print(f"wrote {out} (test accuracy {meta['test_accuracy']:.4f})")


def maskgit_registry():
    """The installed plugins' registry, with this plugin as ``maskgit`` even where its entry point
    is not installed (so that ``plugins=maskgit`` resolves)."""
    from dimo_core.registry import Registry, plugin_manager

    from . import plugin
    pm = plugin_manager()
    if pm.get_plugin("maskgit") is None:
        pm.register(plugin, name="maskgit")
    return Registry(pm)


def build_teacher(overrides: list[str], out: Path) -> None:
    import shutil

    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.train_teacher import train_teacher

    registry = maskgit_registry()
    ctx = Context(load_config(["plugins=maskgit", *overrides], registry), registry)
    trained = train_teacher(ctx, progress=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained, out)
    print(f"wrote {out} (from {trained})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dimo_maskgit.build_assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="asset", required=True)
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
    teacher = sub.add_parser("teacher", help="dimo train-teacher plugins=maskgit, copied into assets/")
    teacher.add_argument("overrides", nargs="*", help="key=value config overrides")
    teacher.add_argument("--out", type=Path, default=ASSETS / "fmnist_teacher.safetensors")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.asset == "tokenizer":
        build_tokenizer(args.out, args.codebook_size, args.patch_size, args.iters, args.seed)
    elif args.asset == "classifier":
        build_classifier(args.out, args.epochs, args.seed)
    else:
        build_teacher(args.overrides, args.out)


if __name__ == "__main__":
    main()
