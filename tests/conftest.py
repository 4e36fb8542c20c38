import os

import pytest
import torch

torch.set_num_threads(1)  # tiny test models: threads cost more than they give


@pytest.fixture
def dummy():
    from dimo_core.testing import DummyConditions, DummyTeacher
    torch.manual_seed(0)
    return DummyTeacher(), DummyConditions()
