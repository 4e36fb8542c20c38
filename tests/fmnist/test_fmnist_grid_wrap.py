"""The sample grid keeps every sample: more samples than columns wrap into blocks of rows."""
import math

import torch
from PIL import Image


def test_a_grid_of_more_samples_than_columns_wraps_into_blocks(tmp_path):
    from dimo_fmnist.grid import ImageGrid

    class Pixels:  # token i -> a flat grey picture of value i / 40
        def decode(self, tokens):
            return (tokens[:, :1].float() / 40).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28)

    tokens = torch.arange(20)[:, None].repeat(1, 4)
    heights = {}
    for n in (10, 20):
        ImageGrid(Pixels(), filename=f"{n}.png", max_columns=16)({"student": tokens[:n]}, torch.arange(n) % 10,
                                                                   str(tmp_path))
        heights[n] = Image.open(tmp_path / f"{n}.png").size[1]
    assert math.isclose(heights[20] / heights[10], 2, rel_tol=0.25)  # 20 samples: two blocks of 10 columns
