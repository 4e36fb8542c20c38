"""The quality-vs-steps plot a newcomer reads: titled panels, a grid, NaN marked."""
from PIL import Image

from dimo_core.evaluate import METRIC_INFO, metric_info, panel_title, plot_quality


def rows_with(names, nan_at=None):
    rows = []
    for who, steps in [("teacher", s) for s in (1, 2, 4, 8, 16, 32)] + [("student", 1), ("student", 4)]:
        rows.append({"sampler": who, "steps": steps,
                     "metrics": {n: float("nan") if (who, steps, n) == nan_at else 1.0 / steps for n in names}})
    return rows


def test_panels_are_titled_with_the_full_name_the_key_and_the_direction():
    title = panel_title("fd_fmnist_cnn", METRIC_INFO)
    assert "Fréchet distance" in title and "(fd_fmnist_cnn)" in title and "lower is better" in title
    assert "higher is better" in panel_title("recall", METRIC_INFO)
    assert panel_title("my_score", METRIC_INFO) == "my_score"  # unknown: the key, no invented direction

    class Declares:
        metric_info = {"my_score": ("my own score", "higher")}
    assert "higher is better" in panel_title("my_score", metric_info([Declares()]))


def test_many_metrics_are_laid_out_in_a_grid_not_one_long_row(tmp_path):
    names = ["fd_fmnist_cnn", "is_fmnist_cnn", "precision", "recall", "density", "coverage", "class_accuracy"]
    plot_quality(rows_with(names, nan_at=("student", 1, "recall")), tmp_path / "q.png")
    width, height = Image.open(tmp_path / "q.png").size
    assert width / height < 1.6  # 3 columns x 3 rows (one long row of 7 was 7.9 wide for 1 high)
