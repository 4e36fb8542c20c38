"""Configuration of a Dream-shaped test model (model_type "Dream", as the published one), in the
transformers 4.x style of the published configuration_dream.py."""
from transformers import PretrainedConfig


class TinyDreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, mask_token_id=None,
                 tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
