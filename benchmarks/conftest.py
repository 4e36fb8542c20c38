import pytest
import torch

from dimo_toy.teacher import ToyMDM
from dimo_toy.conditions import ClassConditions


def build_model():
    """A teacher-sized-for-CPU MDM: 4 layers, width 256, 64 tokens, 4 classes."""
    torch.manual_seed(0)
    return ToyMDM(vocab_size=256, seq_len=64, num_classes=4, dim=256, depth=4, heads=4).eval(), ClassConditions(4)


@pytest.fixture(scope="session")
def model_and_conditions():
    return build_model()
