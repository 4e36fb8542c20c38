"""log.tensorboard=true: the numbers of train_log.jsonl, as TensorBoard scalars at the same steps."""
import json

import pytest

from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.distill import distill
from dimo_core.registry import get_registry

# tensorboard is in the test extra (pip install -e ".[test]"); elsewhere it is the optional extra dimo[tensorboard]
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install 'dimo[tensorboard]')")


def test_tensorboard_scalars_equal_the_json_log(tmp_path):
    registry = get_registry()
    config = load_config(["plugins=toy", f"out_dir={tmp_path}", "threads=1", "log.tensorboard=true",
                          "distill.steps=3", "distill.batch_size=8", "distill.log_every=1"], registry)
    distill(Context(config, registry), progress=False)
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert "distill/div" in events.Tags()["scalars"]
    for key in ("div", "aux_loss"):
        logged = [(e.step, e.value) for e in events.Scalars(f"distill/{key}")]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in records]
