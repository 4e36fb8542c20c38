"""Registers Meissonic: the teacher, its tokenizers, prompt conditions, captioned Fashion-MNIST,
the prompt-alignment metric, a prompt grid writer, and the presets ``meissonic`` (CPU, bundled
Fashion-MNIST teacher) and ``meissonic_1024`` (the released 1024 px model, a GPU run)."""
from __future__ import annotations

from pathlib import Path
import dimo_core
from dimo_core.errors import ConfigError
from dimo_core.presets import load_preset

from .teacher import TimestepConvention, build_teacher

ASSETS = Path(__file__).parent / "assets"
PRESETS = Path(__file__).parent / "presets"
BUNDLED_FOLDER = ASSETS / "fmnist"  # the bundled teacher, text encoder and tokenizer (release layout)


def _prompt_encoder(ctx, path: str | None, max_length: int):
    from .text import PromptEncoder, load_text_encoder
    tokenizer, encoder = load_text_encoder(path or BUNDLED_FOLDER, ctx.device)
    return PromptEncoder(tokenizer, encoder, max_length)


@dimo_core.hookimpl
def register_teachers(register):
    def meissonic(ctx, path: str | None = None, grid_size: int = 64, timestep: TimestepConvention = "mask_ratio",
                  reference_steps: int = 48, num_layers: int | None = None, num_single_layers: int | None = None,
                  attention_head_dim: int | None = None, num_attention_heads: int | None = None,
                  joint_attention_dim: int | None = None, pooled_projection_dim: int | None = None,
                  axes_dims_rope: list[int] | None = None, vocab_size: int | None = None,
                  codebook_size: int | None = None, downsample: bool | None = None, upsample: bool | None = None):
        """path: a Meissonic folder (transformer/ inside), a transformer folder, a .safetensors file, or
        None (fresh). Architecture options left unset come from the folder's config.json (or, fresh, the
        release's 1B sizes); set ones must agree with it."""
        return build_teacher(path, grid_size=grid_size, timestep=timestep, reference_steps=reference_steps,
                             num_layers=num_layers,
                             num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
                             num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
                             pooled_projection_dim=pooled_projection_dim, axes_dims_rope=axes_dims_rope,
                             vocab_size=vocab_size, codebook_size=codebook_size, downsample=downsample,
                             upsample=upsample)
    register("meissonic", meissonic)


@dimo_core.hookimpl
def register_tokenizers(register):
    def meissonic_vq(ctx, path: str | None = None, patch_tokenizer: str | None = None):
        """path: a Meissonic folder -> its vqvae/ through diffusers (extra dimo[meissonic]); None -> the
        Fashion-MNIST bench's patch tokenizer (``patch_tokenizer`` or its bundled file)."""
        from .tokenizer import load_patch_tokenizer, load_vq_tokenizer
        if path is not None:
            return load_vq_tokenizer(path, ctx.device)
        return load_patch_tokenizer(patch_tokenizer)
    register("meissonic_vq", meissonic_vq)


@dimo_core.hookimpl
def register_conditions(register):
    def captions(ctx, path: str | None = None, negative_prompt: str = "",
                 micro_conds: tuple[float, ...] = (28, 28, 0, 0, 6), max_length: int = 16):
        """Fashion-MNIST captions (class name x template; held-out templates for split=eval), encoded by
        the CLIP text encoder under ``path`` (default: the bundled one)."""
        from .conditions import CaptionConditions
        return CaptionConditions(_prompt_encoder(ctx, path, max_length), negative_prompt, micro_conds)
    register("captions", captions)

    def prompt_files(ctx, path: str, train_file: str, eval_file: str | None = None, negative_prompt: str = "",
                     micro_conds: tuple[float, ...] = (1024, 1024, 0, 0, 6), max_length: int = 77):
        """Prompts from text files (one per line), encoded by the CLIP text encoder of the Meissonic
        folder ``path``."""
        from .conditions import PromptFileConditions
        return PromptFileConditions(_prompt_encoder(ctx, path, max_length), train_file, eval_file,
                                    negative_prompt, micro_conds)
    register("prompt_files", prompt_files)


@dimo_core.hookimpl
def register_datasets(register):
    def fashion_mnist_captions(ctx, root: str | None = None):
        """Fashion-MNIST images as codes of ``tokenizer`` with captions from the ``captions`` conditions."""
        from .conditions import CaptionConditions
        from .data import CaptionedFashionMNIST
        if not isinstance(ctx.conditions, CaptionConditions):
            raise ConfigError("dataset fashion_mnist_captions needs conditions.name=captions")
        return CaptionedFashionMNIST(ctx.tokenizer, ctx.conditions, root)
    register("fashion_mnist_captions", fashion_mnist_captions)


@dimo_core.hookimpl
def register_metrics(register):
    def prompt_alignment(ctx, classifier: str | None = None, root: str | None = None, batch_size: int = 500):
        """The Fashion-MNIST bench's image metrics plus the CNN's accuracy at the class each prompt names
        (``classifier``: the evaluation CNN file, default the bench's; ``root``: Fashion-MNIST folder)."""
        from .metrics import PromptAlignment
        return PromptAlignment(ctx.tokenizer, classifier, root, batch_size)
    register("prompt_alignment", prompt_alignment)


@dimo_core.hookimpl
def register_writers(register):
    def prompt_grid(ctx, max_columns: int = 10):
        """A PNG grid: one row per sampler, one column per prompt (titled with the prompt)."""
        from .writer import PromptGrid
        return PromptGrid(ctx.tokenizer, ctx.conditions.text, max_columns=max_columns)
    register("prompt_grid", prompt_grid)


@dimo_core.hookimpl
def register_exporters(register):
    def meissonic_folder(ctx):
        """The teacher's folder layout: the student as transformer/, the other parts linked."""
        from .export import MeissonicFolderExporter
        return MeissonicFolderExporter(getattr(ctx.config.teacher, "path", None))
    register("meissonic_folder", meissonic_folder, teachers=["meissonic"], default=True)


@dimo_core.hookimpl
def register_presets(register):
    register("meissonic", load_preset(PRESETS / "meissonic.yaml"))
    register("meissonic_1024", load_preset(PRESETS / "meissonic_1024.yaml"))
