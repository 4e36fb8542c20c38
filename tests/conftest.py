import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def dummy():
    from dimo_core.testing import DummyConditions, DummyTeacher
    torch.manual_seed(0)
    return DummyTeacher(), DummyConditions()
