"""A dimo Teacher over a Hugging Face masked LM folder (LLaDA-8B, MDLM, BERT, the bundled model).

The student generates the RESPONSE only: ``forward(tokens (B, L), cond)`` puts the prompt of
``cond`` in front, runs the model on prompt + response, and returns the response's logits
(B, L, V), as LLaDA conditions generation. ``cond`` is None (unconditional), a tensor of prompt
ids (B, P), or ``{"input_ids": (B, P), "attention_mask": (B, P)}`` for left-padded prompts.
"""
from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import torch
from torch import Tensor, nn

from dimo_core.checkpoint import load_state_dict_strict, load_tensors
from dimo_core.conditions import conditions_to
from dimo_core.errors import CheckpointError, ConfigError
from dimo_core.init import perturb_embeddings

from .families import FAMILIES, Family, family_for
from .hf_loading import load_masked_lm
from .tokenizer import read_model_config, resolve_mask_id

ASSETS = Path(__file__).parent / "assets"
BUNDLED_TEACHER = str(ASSETS / "teacher")       # model + tokenizer, Hugging Face folder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def prompt_parts(cond) -> tuple[Tensor | None, Tensor | None]:
    """(prompt ids (B, P), attention mask (B, P) or None) of a condition batch."""
    if cond is None:
        return None, None
    if isinstance(cond, Tensor):
        return cond, None
    if isinstance(cond, dict) and "input_ids" in cond:
        return cond["input_ids"], cond.get("attention_mask")
    raise ConfigError(f"a text teacher takes prompt ids (B, P) or a dict with input_ids as its condition, "
                      f"got {type(cond).__name__}{sorted(cond) if isinstance(cond, dict) else ''}")


def find_module(model: nn.Module, dotted: str) -> nn.Module:
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
        raise ConfigError(f"no module {dotted!r} in the teacher; embedding modules are: {', '.join(names)}") from None


class HFMaskedLMTeacher(nn.Module):
    """Prompt + response through a Hugging Face masked LM; logits of the response positions.

    ``vocab_size`` is the model's logit count, ``mask_id`` comes from the checkpoint, ``seq_len``
    is the response length L the student generates; ``family`` says how the model takes padding
    and where its logits sit (families.py)."""

    def __init__(self, model: nn.Module, mask_id: int, seq_len: int, vocab_size: int | None = None,
                 embedding_module: str | None = None, family: Family = FAMILIES["llada"]):
        super().__init__()
        self.model = model
        self.family = family
        self.mask_id = int(mask_id)
        self.seq_len = int(seq_len)
        self.embedding_module = embedding_module  # dotted name inside ``model``; None: get_input_embeddings()
        params = inspect.signature(model.forward).parameters
        self.takes_attention_mask = "attention_mask" in params or any(
            p.kind is p.VAR_KEYWORD for p in params.values())
        self.adapters_only = False  # set by add_lora: copies of this teacher train their LoRA adapters only
        self.vocab_size = int(vocab_size) if vocab_size else self._count_logit_columns()
        if self.mask_id < 0:
            raise CheckpointError(f"mask id {self.mask_id} is negative; check mask_token_id in config.json")

    def add_lora(self, rank: int, alpha: float | None = None, targets: list[str] | None = None) -> None:
        """Wrap the network with zero-initialised LoRA adapters (outputs unchanged)."""
        from .memory import apply_lora
        self.model = apply_lora(self.model, rank, alpha, targets)
        self.adapters_only = True
        self.requires_grad_(False)

    def requires_grad_(self, requires_grad: bool = True) -> "HFMaskedLMTeacher":
        """With LoRA, "make this copy trainable" (what the engine asks of generator and aux) means its
        adapters: the copied 8B base weights stay frozen, so Adam holds adapter states only."""
        if requires_grad and self.adapters_only:
            for name, p in self.named_parameters():
                p.requires_grad_("lora_" in name)
            return self
        return super().requires_grad_(requires_grad)

    def _count_logit_columns(self) -> int:
        head = None
        with contextlib.suppress(NotImplementedError, AttributeError):
            head = self.model.get_output_embeddings()
        if head is not None and getattr(head, "weight", None) is not None:
            return int(head.weight.shape[0])
        with torch.no_grad():  # a one-token probe, for models without a standard head accessor
            device = next(self.model.parameters()).device
            return int(self._logits(torch.tensor([[self.mask_id]], device=device), None).shape[-1])

    def input_embeddings(self) -> nn.Module:
        if self.embedding_module:
            return find_module(self.model, self.embedding_module)
        try:
            embeddings = self.model.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            embeddings = None
        if embeddings is None:
            raise ConfigError("this model has no get_input_embeddings(); set teacher.embedding_module to the dotted "
                              "name of its token embedding to use embedding noise (distill.sigma)")
        return embeddings

    def _logits(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        kwargs = self.family.padding_inputs(attention_mask) if attention_mask is not None else {}
        if self.family.noise_level_argument:   # MDLM: sigma = 0, as its release for untimed models
            kwargs[self.family.noise_level_argument] = torch.zeros(ids.shape[0], device=ids.device)
        out = self.model(input_ids=ids, **kwargs)
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = out[0] if isinstance(out, (tuple, list)) else out  # MDLM returns a bare tensor
        if not isinstance(logits, Tensor) or logits.dim() != 3:
            raise CheckpointError("the model returned no (B, T, V) logits; is this a masked LM with its head "
                                  "(AutoModelForMaskedLM), not a bare encoder?")
        return self.family.align(logits)

    def forward(self, tokens: Tensor, cond=None, embedding_noise: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
        prompt, prompt_mask = prompt_parts(conditions_to(cond, tokens.device))
        n_prompt = 0 if prompt is None else prompt.shape[1]
        ids = tokens if prompt is None else torch.cat([prompt.to(tokens.dtype), tokens], dim=1)
        attention_mask = None
        if prompt_mask is not None and not bool(prompt_mask.all()):  # left padding present
            if not self.takes_attention_mask:
                raise ConfigError("the prompts are padded but this model takes no attention_mask; use prompts of "
                                  "one length (conditions.prompt_len no longer than the shortest prompt)")
            attention_mask = torch.cat([prompt_mask.long(), torch.ones_like(tokens)], dim=1)
        hook = None
        if embedding_noise > 0:
            def perturb_response(module, inputs, output):  # the generator's noise, response positions only
                return torch.cat([output[:, :n_prompt], perturb_embeddings(output[:, n_prompt:], embedding_noise, generator)], 1)
            hook = self.input_embeddings().register_forward_hook(perturb_response)
        try:
            logits = self._logits(ids, attention_mask)
        finally:
            if hook is not None:
                hook.remove()
        return logits[:, n_prompt:]

    def save_pretrained(self, folder: str | Path, tokenizer=None, dtype: str | None = None) -> None:
        """Write the wrapped model (and tokenizer) as a Hugging Face folder that ``hf_mdm`` loads back."""
        model = self.model if dtype is None else _cast_copy(self.model, DTYPES[dtype])
        model.save_pretrained(str(folder))
        if tokenizer is not None:
            from .tokenizer import save_tokenizer
            save_tokenizer(getattr(tokenizer, "hf", tokenizer), folder)


def _cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy
    return copy.deepcopy(model).to(dtype)


def bundled_model(vocab_size: int, mask_id: int, pad_id: int | None = None, bos_id: int | None = None,
                  eos_id: int | None = None, hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4,
                  intermediate_size: int = 512, max_positions: int = 256) -> nn.Module:
    """A freshly initialised bundled architecture (what `dimo train-teacher` trains)."""
    from .modeling import DimoLladaConfig, DimoLladaForMaskedLM
    config = DimoLladaConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=num_heads, intermediate_size=intermediate_size,
                             max_position_embeddings=max_positions, mask_token_id=mask_id, pad_token_id=pad_id,
                             bos_token_id=bos_id, eos_token_id=eos_id)
    return DimoLladaForMaskedLM(config)


def load_teacher(path: str | None, *, seq_len: int, tokenizer=None, trust_remote_code: bool = False,
                 mask_id: int | None = None, dtype: str = "float32", embedding_module: str | None = None,
                 architecture: dict | None = None, family: str = "auto") -> HFMaskedLMTeacher:
    """A Hugging Face folder; a dimo teacher .safetensors (state of this wrapper, from `dimo train-teacher`)
    with the architecture options it was trained with; or None: a fresh bundled architecture."""
    if path is not None and Path(path).is_dir():
        config = read_model_config(path)
        conventions = family_for(family, config, str(path))
        model = load_masked_lm(path, trust_remote_code, dtype)
        hf_tokenizer = None
        if mask_id is None and config.get("mask_token_id") is None:  # BERT family: the tokenizer knows
            from .tokenizer import load_hf_tokenizer
            with contextlib.suppress(CheckpointError):
                hf_tokenizer = load_hf_tokenizer(path, trust_remote_code)
        return HFMaskedLMTeacher(model, resolve_mask_id(config, hf_tokenizer, mask_id, str(path)), seq_len,
                                 embedding_module=embedding_module, family=conventions)
    if tokenizer is None:
        raise ConfigError("a new teacher takes its vocabulary and mask id from the tokenizer; set tokenizer.name=hf")
    if mask_id is not None and tokenizer.mask_id is not None and mask_id != tokenizer.mask_id:
        raise ConfigError(f"teacher.mask_id={mask_id} disagrees with the tokenizer's mask id {tokenizer.mask_id}")
    model = bundled_model(tokenizer.vocab_size, tokenizer.mask_id if mask_id is None else mask_id,
                          getattr(tokenizer, "pad_id", None), getattr(tokenizer, "bos_id", None),
                          getattr(getattr(tokenizer, "hf", None), "eos_token_id", None), **(architecture or {}))
    teacher = HFMaskedLMTeacher(model.to(DTYPES[dtype]), model.config.mask_token_id, seq_len,
                                embedding_module=embedding_module)
    if path is not None:
        if not str(path).endswith(".safetensors"):
            raise CheckpointError(f"teacher path {path} is neither a Hugging Face folder nor a .safetensors file")
        tensors, _ = load_tensors(path)
        load_state_dict_strict(teacher, tensors, str(path))
    return teacher
