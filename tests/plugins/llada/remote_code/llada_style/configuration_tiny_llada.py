"""Configuration of a LLaDA-shaped test model, written in the style of the published
configuration_llada.py (transformers 4.x era): an explicit __init__ with keyword defaults."""
from transformers import PretrainedConfig


class TinyLLaDAConfig(PretrainedConfig):
    model_type = "tiny_llada_style"

    def __init__(self, d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=300, embedding_size=None,
                 rope_theta=10000.0, rms_norm_eps=1e-5, weight_tying=False, mask_token_id=None, use_cache=False,
                 **kwargs):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size or vocab_size   # logit rows; LLaDA pads its vocabulary to 126464
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.weight_tying = weight_tying
        self.mask_token_id = mask_token_id
        self.use_cache = use_cache
        super().__init__(**kwargs)
