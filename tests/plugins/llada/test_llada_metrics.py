"""text_quality (generative perplexity, entropy, distinct-n) and the text_examples writer."""
import math

import pytest
import torch

from dimo_llada.metrics import ReferenceScorer, TextQuality, distinct_n, unigram_entropy
from dimo_llada.testing import tiny_llada_folder
from dimo_llada.tokenizer import HFTokenizer
from dimo_llada.writer import TextExamples


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_llada_folder(tmp_path_factory.mktemp("reference"), causal=True, seed=3)


@pytest.fixture(scope="module")
def tokenizer(folder):
    return HFTokenizer.from_folder(folder, mask_id=3)


def test_entropy_and_distinct_n_closed_forms():
    assert unigram_entropy([7, 7, 7, 7]) == 0.0
    assert unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    assert unigram_entropy([1, 1, 2, 2]) == pytest.approx(math.log(2))
    rows = [[1, 2, 1, 2], [1, 2, 3, 4]]
    assert distinct_n(rows, 1) == pytest.approx(4 / 8)
    assert distinct_n(rows, 2) == pytest.approx(len({(1, 2), (2, 1), (2, 3), (3, 4)}) / 6)


def test_generative_perplexity_is_the_token_weighted_nll_of_the_response_given_the_prompt(folder, tokenizer):
    metric = TextQuality(tokenizer, ReferenceScorer(folder), batch_size=2)
    assert metric.retokenize is False                  # same vocabulary: the ids are scored as generated
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(4, 300, (3, 5), generator=g)
    prompt = {"input_ids": torch.randint(4, 300, (3, 4), generator=g), "attention_mask": torch.ones(3, 4, dtype=torch.long)}
    prompt["attention_mask"][0, :2] = 0                # a left-padded prompt: its pads are not context
    scores = metric(responses, prompt)

    model, nll, count = metric.scorer.model, 0.0, 0
    for i in range(3):
        context = [tokenizer.bos_id] + prompt["input_ids"][i][prompt["attention_mask"][i] == 1].tolist()
        seq = torch.tensor([context + responses[i].tolist()])
        logp = model(seq).logits.log_softmax(-1)[0]
        for j in range(len(context), seq.shape[1]):
            nll -= float(logp[j - 1, seq[0, j]])
            count += 1
    assert count == 15
    assert scores["nll"] == pytest.approx(nll / count, rel=1e-5)
    assert scores["gen_ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert scores["entropy"] == pytest.approx(sum(unigram_entropy(r) for r in responses.tolist()) / 3)
    assert set(scores) == {"gen_ppl", "nll", "entropy", "distinct_1", "distinct_2"}


def test_a_collapsed_generator_shows_in_entropy_and_distinct(folder, tokenizer):
    metric = TextQuality(tokenizer, ReferenceScorer(folder))
    same = metric(torch.full((4, 6), 42), None)
    varied = metric(torch.randint(4, 300, (4, 6), generator=torch.Generator().manual_seed(1)), None)
    assert same["entropy"] == 0 and same["distinct_1"] == pytest.approx(1 / 24)
    assert varied["entropy"] > 1.5 and varied["distinct_2"] > 0.9


def test_retokenized_scoring_reads_text(folder, tokenizer):
    """A canonically tokenised response scores the same through text; a split-up one does not."""
    scorer = ReferenceScorer(folder)
    through_text = TextQuality(tokenizer, scorer, retokenize=True)
    as_ids = TextQuality(tokenizer, scorer, retokenize=False)
    canonical = torch.stack([tokenizer.encode("The cat sat on the mat.")] * 2)
    assert through_text(canonical, None)["nll"] == pytest.approx(as_ids(canonical, None)["nll"], rel=1e-5)
    bytes_only = torch.tensor([tokenizer.hf.convert_tokens_to_ids(list("Thecat"))] * 2)
    assert through_text(bytes_only, None)["nll"] != pytest.approx(as_ids(bytes_only, None)["nll"], rel=1e-3)


def test_examples_writer_shows_prompt_and_every_row(tokenizer, tmp_path):
    writer = TextExamples(tokenizer, n=2)
    prompt = {"input_ids": tokenizer.encode(["The cat", "A dog"])[:, :2], "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    rows = {"teacher 8 steps": tokenizer.encode(["sat down.", "ran off."]),
            "student": torch.stack([tokenizer.encode("sat"), tokenizer.encode("ran")])}
    (path,) = writer(rows, prompt, str(tmp_path))
    text = open(path).read()
    assert text.count("## Example") == 2 and "teacher 8 steps: sat down." in text and "student: ran" in text
    assert "prompt: " + tokenizer.hf.decode(prompt["input_ids"][0]) in text
