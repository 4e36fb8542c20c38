"""The toy plug-in through the core (PluginContract), and its exact metrics against closed forms."""
import torch

from dimo_core.testing import PluginContract
from dimo_toy import plugin
from dimo_toy.metrics import ExactMetrics
from dimo_toy.source import MarkovSource


class TestToyPlugin(PluginContract):
    name = "toy"
    module = plugin
    registers = {"teachers": ["toy_mdm"], "tokenizers": ["toy_symbols"], "conditions": ["toy_classes"],
                 "datasets": ["toy_markov"], "metrics": ["toy_exact"], "writers": ["toy_text"], "presets": ["toy"]}
    tiny = ["teacher.dim=16", "teacher.depth=1", "teacher.heads=2"]

    def check_report(self, report, out_dir):
        assert all({"valid_fraction", "nll_per_token", "pair_tv"} <= set(r["metrics"]) for r in report["rows"])
        assert "class 0:" in (out_dir / "samples.md").read_text()


def test_samples_of_the_source_score_as_the_source():
    """Sequences drawn from the source itself: all valid, allowed pairs only, NLL near the entropy."""
    src = MarkovSource()
    labels = torch.arange(4000) % 4
    tokens = src.sample(labels, torch.Generator().manual_seed(0))
    scores = ExactMetrics(src)(tokens, labels)
    assert scores["valid_fraction"] == scores["valid_transitions"] == 1.0
    assert abs(scores["nll_per_token"] - scores["source_entropy_per_token"]) < 0.02
    assert scores["pair_tv"] < 0.1
