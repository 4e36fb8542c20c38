"""How each text-model family is called: where its logits sit and how it takes left padding.

Read from each family's own release (docs/text-families.md):
- LLaDA, MDLM, BERT-style masked LMs, the bundled architecture: the logits at position i are for
  token i; padding goes in as the usual 2-D ``attention_mask`` (B, T).
- Dream (an autoregressively initialised model): the logits at position i are for token i + 1;
  its own code aligns them with ``cat([logits[:, :1], logits[:, :-1]], 1)``. Padding goes in as a
  boolean (B, 1, T, T) mask of real-token pairs with ``position_ids`` counting real tokens only.
- MDLM: its backbone takes the noise level as a second input (``timesteps``); MDLM feeds zeros
  when the model is not time-conditioned, as the published OpenWebText model is.
- DUO (uniform-state diffusion): there is no mask state to start from or to query, which Di[M]O
  needs; refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, cat

from dimo_core.errors import ConfigError

FamilyName = Literal["auto", "llada", "dream", "mdlm", "bert", "duo"]


@dataclass(frozen=True)
class Family:
    name: str
    logit_shift: bool = False        # logits at position i predict token i + 1 (Dream)
    pairwise_padding: bool = False   # padding as (B, 1, T, T) pairs + position_ids (Dream)
    noise_level_argument: str | None = None   # MDLM: forward(input_ids, timesteps), zeros when not time-conditioned

    def padding_inputs(self, attention_mask: Tensor) -> dict[str, Tensor]:
        """Model keyword arguments for a 2-D attention mask (B, T) of left-padded rows."""
        if not self.pairwise_padding:
            return {"attention_mask": attention_mask}
        real = attention_mask.bool()
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(~real, 1)
        return {"attention_mask": real[:, None, None, :] & real[:, None, :, None], "position_ids": positions}

    def align(self, logits: Tensor) -> Tensor:
        """Logits (B, T, V) with position i scoring token i (the first position keeps its own)."""
        return cat([logits[:, :1], logits[:, :-1]], 1) if self.logit_shift else logits


FAMILIES = {"llada": Family("llada"), "mdlm": Family("mdlm", noise_level_argument="timesteps"), "bert": Family("bert"),
            "dream": Family("dream", logit_shift=True, pairwise_padding=True)}


def detect_family(config: dict) -> str:
    """The family a config.json belongs to (model_type / architectures), "llada" for the aligned kind."""
    names = [str(config.get("model_type", ""))] + [str(a) for a in config.get("architectures") or []]
    lowered = [n.lower() for n in names]
    if any(n == "dream" or n.startswith("dream") for n in lowered):
        return "dream"
    if any(n == "duo" or n.startswith("duo") for n in lowered):
        return "duo"
    if any(n == "mdlm" or n.startswith("mdlm") for n in lowered):
        return "mdlm"
    return "llada"


def family_for(requested: FamilyName, config: dict, where: str) -> Family:
    name = detect_family(config) if requested == "auto" else requested
    if name == "duo":
        raise ConfigError(f"{where} is a DUO (uniform-state diffusion) model: its tokens start from random "
                          f"tokens, not from a mask, and it has no mask state to be queried on, which Di[M]O's "
                          f"teacher needs; distil a masked (absorbing-state) model such as MDLM, LLaDA or Dream")
    if name not in FAMILIES:
        raise ConfigError(f"teacher.family must be one of auto, {', '.join(FAMILIES)}, got {requested!r}")
    return FAMILIES[name]
