"""Configuration of an MDLM-shaped test model (model_type "mdlm"), transformers 4.x style."""
from transformers import PretrainedConfig


class TinyMDLMConfig(PretrainedConfig):
    model_type = "mdlm"

    def __init__(self, vocab_size=301, hidden_dim=32, cond_dim=16, n_blocks=2, n_heads=2, **kwargs):
        self.vocab_size = vocab_size   # the tokenizer's vocabulary + 1: the mask index is the last
        self.hidden_dim = hidden_dim
        self.cond_dim = cond_dim
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        super().__init__(**kwargs)
