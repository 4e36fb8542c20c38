"""The eval progress bar counts samples weighted by their steps, so its ETA holds while rows grow in cost."""
import dimo_core.evaluate as evaluate_module
from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.distill import distill
from dimo_core.registry import get_registry


class RecordingBar:
    made = []

    def __init__(self, total, **kwargs):
        self.total, self.n, self.rows = total, 0, []
        RecordingBar.made.append(self)

    def update(self, n):
        self.n += n

    def set_postfix_str(self, text):
        self.rows.append((text, self.n))

    def close(self):
        pass


def test_the_bar_ticks_samples_times_steps(tmp_path, monkeypatch):
    registry = get_registry()
    config = load_config(["plugins=toy", f"out_dir={tmp_path}", "threads=1", "distill.steps=1", "distill.batch_size=4",
                          "eval.samples=6", "eval.batch_size=4", "eval.teacher_steps=[1,4]", "eval.student_steps=[1]"],
                         registry)
    ctx = Context(config, registry)
    distill(ctx, progress=False)
    monkeypatch.setattr(evaluate_module, "tqdm", RecordingBar)
    evaluate_module.evaluate(ctx, progress=True)
    [bar] = RecordingBar.made
    assert bar.total == bar.n == 6 * (1 + 4 + 1)
    # each row starts where the previous one's samples x steps left the bar
    assert bar.rows == [("teacher 1 step", 0), ("teacher 4 steps", 6), ("student 1 step", 30)]
