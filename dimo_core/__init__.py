"""dimo: distil masked diffusion models into one-step generators (Di[M]O)."""
from .conditions import cat_conditions, index_conditions, where_conditions
from .config import REQUIRED
from .errors import CheckpointError, ConfigError, DimoError, NonFiniteLossError, PluginError
from .hookspecs import hookimpl
from .init import perturb_embeddings, random_init
from .masking import mask_ratio, mask_tokens
from .protocols import Conditions, Dataset, Divergence, InitStrategy, Metric, Sampler, Teacher, Tokenizer, Writer

__version__ = "0.1.0"
