"""Loading Hugging Face masked-LM folders, including remote-code ones written for older transformers.

A remote-code folder (config.json with ``auto_map``, its own ``modeling_*.py``) is loaded through
its own class, resolved from ``auto_map`` as the Auto classes do. Model files written for
transformers 4.x (LLaDA's, Dream's, MDLM's) never call ``post_init()`` and define ``tie_weights()``
without arguments; transformers 5's loader reads attributes that ``post_init`` sets
(``all_tied_weights_keys``) and passes arguments to ``tie_weights``. ``compatible_class`` gives
such a class the two things a 5.x-era model file would have, in a subclass with the same name
and module, so nothing in transformers is patched and the folder's own code is untouched.

Any other failure inside ``from_pretrained`` becomes a ``CheckpointError`` that names the folder,
the model class, the installed transformers and what to try.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from dimo_core.errors import CheckpointError

from .tokenizer import read_model_config

LOWEST_TRANSFORMERS = "4.51.3"   # pyproject.toml's lower bound; CI runs the loading tests at it
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Auto classes tried in order: a masked-LM head first; LLaDA and Dream register only AutoModel
# (their AutoModel is the LM with its head); AutoModelForCausalLM last (LLaDA lists it too).
AUTO_NAMES = ("AutoModelForMaskedLM", "AutoModel", "AutoModelForCausalLM")


def transformers_version() -> tuple[int, ...]:
    import transformers
    return tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())


def dtype_argument(dtype: str) -> dict:
    """``dtype=`` from transformers 4.56 on (5.x warns on the old name), ``torch_dtype=`` before."""
    return {"dtype" if transformers_version() >= (4, 56) else "torch_dtype": DTYPES[dtype]}


def _takes_arguments(function) -> bool:
    params = list(inspect.signature(function).parameters.values())[1:]   # after self
    return bool(params)


_compatible: dict[type, type] = {}


def compatible_class(cls: type) -> type:
    """``cls`` as transformers 5 expects a model class, for files written for 4.x (see the module doc).

    The subclass runs ``post_init()`` after the original ``__init__`` when that did not (what
    5.x-era files do themselves: it records tied weights and the like, and under from_pretrained
    initialises nothing that is then loaded), and calls an argument-less ``tie_weights`` without
    the arguments 5.x passes. With a 5.x-era file both are no-ops."""
    if cls in _compatible:
        return _compatible[cls]
    original_tie_weights = cls.tie_weights

    class Compatible(cls):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            if not self.__dict__.get("_post_init_ran", False):
                self.post_init()

        def post_init(self):
            super().post_init()
            self._post_init_ran = True

        def tie_weights(self, *args, **kwargs):
            if _takes_arguments(original_tie_weights):
                return super().tie_weights(*args, **kwargs)
            return super().tie_weights()

    # the same name and module: save_pretrained writes the original class into config.json and
    # copies the original modeling file
    Compatible.__name__, Compatible.__qualname__ = cls.__name__, cls.__qualname__
    Compatible.__module__ = cls.__module__
    _compatible[cls] = Compatible
    return Compatible


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def load_failure(path, class_name: str, error: BaseException) -> CheckpointError:
    """What to do when a folder's model class fails to load: names the folder, the class and the
    installed transformers; suggests the transformers the folder was saved with."""
    import transformers
    saved_with = read_model_config(path).get("transformers_version")
    written_for = f" (config.json: saved with transformers {saved_with})" if saved_with else ""
    return CheckpointError(
        f"cannot load the model in {path}: {class_name} failed under transformers {transformers.__version__} "
        f"({_first_line(error)}). Its code may need another transformers{written_for}: dimo is tested with "
        f"transformers {LOWEST_TRANSFORMERS} to 5.x, e.g. pip install 'transformers=={LOWEST_TRANSFORMERS}' for "
        f"model files written before 5.0; also check teacher.dtype. docs/text-families.md lists the families "
        f"dimo loads and their options")


def load_config(path: str | Path, trust_remote_code: bool):
    from transformers import AutoConfig

    from . import modeling  # noqa: F401  registers the bundled architecture with the Auto classes
    raw = read_model_config(path)
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError) as e:
        if raw.get("auto_map") and not trust_remote_code:
            raise CheckpointError(f"{path} ships its own model code (config.json auto_map) and model_type "
                                  f"{raw.get('model_type')!r} is not built into transformers; set "
                                  f"teacher.trust_remote_code=true (and tokenizer.trust_remote_code=true) "
                                  f"to run it") from None
        raise CheckpointError(f"cannot read the configuration of {path} ({_first_line(e)})") from None
    except Exception as e:   # the folder's own configuration code failed
        raise load_failure(path, raw.get("auto_map", {}).get("AutoConfig", "its configuration class"), e) from e


def model_class(path: str | Path, config, trust_remote_code: bool) -> type:
    """The class the Auto classes would load, in AUTO_NAMES order; remote code made ``compatible``."""
    import transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    auto_map = getattr(config, "auto_map", None) or {}
    for name in AUTO_NAMES:
        if trust_remote_code and name in auto_map:
            reference = auto_map[name]
            try:
                cls = compatible_class(get_class_from_dynamic_module(reference, str(path)))
            except Exception as e:   # the model file fails to import (a missing transformers module, ...)
                raise load_failure(path, reference, e) from e
            cls.register_for_auto_class(name)   # as the Auto class would: save_pretrained copies the code
            return cls
        mapping = getattr(transformers, name)._model_mapping
        if type(config) in mapping:
            return mapping[type(config)]
    hint = ("; if the folder ships its own model code, set teacher.trust_remote_code=true"
            if auto_map and not trust_remote_code else "")
    raise CheckpointError(f"no masked-LM class for {path}: model_type {getattr(config, 'model_type', None)!r} "
                          f"has none of {', '.join(AUTO_NAMES)} in transformers {transformers.__version__}"
                          f"{' or in auto_map' if auto_map else ''}{hint}")


def load_masked_lm(path: str | Path, trust_remote_code: bool = False, dtype: str = "float32") -> nn.Module:
    """The model of a Hugging Face folder, through its masked-LM class, else AutoModel (LLaDA, Dream)."""
    if not (Path(path) / "config.json").is_file():
        raise CheckpointError(f"{path} is not a Hugging Face model folder (no config.json); give the folder that "
                              f"holds config.json and the weights, or a dimo teacher .safetensors file")
    config = load_config(path, trust_remote_code)
    cls = model_class(path, config, trust_remote_code)
    try:
        return cls.from_pretrained(str(path), config=config, **dtype_argument(dtype))
    except CheckpointError:
        raise
    except Exception as e:   # raised by the model's own code or by transformers on it
        raise load_failure(path, cls.__name__, e) from e
