import pytest
import torch

from dimo_core.conditions import ClassLabels
from dimo_core.mdm import SmallMDM
from timing import DEVICE


def build_model(device=DEVICE):
    """A teacher-sized-for-CPU MDM: 4 layers, width 256, 64 tokens, 4 classes (on the GPU when there is one)."""
    torch.manual_seed(0)
    model = SmallMDM(vocab_size=256, seq_len=64, num_classes=4, dim=256, depth=4, heads=4).eval()
    return model.to(device), ClassLabels(4)


@pytest.fixture
def model_and_conditions():
    """A fresh model per test: no test sees another's device moves or weight changes."""
    return build_model()
