"""Hugging Face folders in the published layout of remote-code text models (config.json with
auto_map, the model's own configuration_*.py / modeling_*.py, safetensors weights, a tokenizer),
built from this project's own modeling files in ``remote_code/<style>/`` written in the style of
the published ones. ``reference_model`` builds the same network without from_pretrained, to
compare logits with what the loader returns."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dimo_llada.testing import tiny_bpe

STYLES = {
    # style: (configuration module.class, modeling module.class, model_type, auto classes in auto_map)
    "llada": ("configuration_tiny_llada.TinyLLaDAConfig", "modeling_tiny_llada.TinyLLaDAModelLM",
              "tiny_llada_style", ("AutoModel", "AutoModelForCausalLM")),
    "dream": ("configuration_tiny_dream.TinyDreamConfig", "modeling_tiny_dream.TinyDreamModel",
              "Dream", ("AutoModel",)),
    "mdlm": ("configuration_tiny_mdlm.TinyMDLMConfig", "modeling_tiny_mdlm.TinyMDLM", "mdlm",
             ("AutoModelForMaskedLM",)),
}


def _classes(folder: Path, style: str):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    config_ref, model_ref, _, _ = STYLES[style]
    return (get_class_from_dynamic_module(config_ref, str(folder)),
            get_class_from_dynamic_module(model_ref, str(folder)))


def write_remote_code_folder(folder: str | Path, style: str = "llada", seed: int = 0, **config) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for source in (Path(__file__).parent / "remote_code" / f"{style}_style").glob("*.py"):
        shutil.copy(source, folder / source.name)
    tokenizer = tiny_bpe(folder)
    config_ref, model_ref, model_type, autos = STYLES[style]
    options = {"vocab_size": len(tokenizer), "mask_token_id": tokenizer.mask_token_id,
               "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, **config}
    (folder / "config.json").write_text(json.dumps({
        "architectures": [model_ref.split(".")[1]], "model_type": model_type,
        "auto_map": {"AutoConfig": config_ref, **{auto: model_ref for auto in autos}},
        "torch_dtype": "float32", **options}, indent=2))
    config_class, model_class = _classes(folder, style)
    torch.manual_seed(seed)
    model = model_class(config_class(**options))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def reference_model(folder: str | Path, style: str = "llada") -> torch.nn.Module:
    """The folder's network built by its own classes and given its weights, strictly."""
    folder = Path(folder)
    config_class, model_class = _classes(folder, style)
    options = {k: v for k, v in json.loads((folder / "config.json").read_text()).items()
               if k not in ("architectures", "model_type", "auto_map", "torch_dtype")}
    model = model_class(config_class(**options))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()
