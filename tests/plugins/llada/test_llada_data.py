"""Text corpus splits, prompt files (text, JSONL, parquet), prompt conditions and text pairs."""
import json

import pytest
import torch

from dimo_core.conditions import cat_conditions
from dimo_core.errors import ConfigError
from dimo_llada.corpus import SPLIT_BUCKETS, builtin_documents, load_records, normalize, split_of
from dimo_llada.conditions import PromptConditions
from dimo_llada.data import BuiltinText, TextPairs, TokenStream
from dimo_llada.testing import SENTENCES, tiny_bpe
from dimo_llada.tokenizer import SPECIAL_TOKENS, HFTokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    tiny_bpe(folder)
    # a class name transformers 4 and 5 both load
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    return HFTokenizer.from_folder(folder)


def test_bpe_has_its_specials_first_and_round_trips_text(tokenizer):
    assert [tokenizer.hf.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.mask_id) == (0, 1, 3)
    text = "The cat sat on the mat, 42 times!"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    batch = tokenizer.encode(["a b", "longer text here"])
    assert batch.shape[0] == 2 and (batch[0] == tokenizer.pad_id).any()
    assert tokenizer.decode(batch) == ["a b", "longer text here"]


def test_splits_are_a_stable_partition_of_the_python_docs():
    docs = builtin_documents(["pydoc"])
    parts = {name: builtin_documents(["pydoc"], name) for name in SPLIT_BUCKETS}
    assert sum(map(len, parts.values())) == len(docs)
    assert not set(parts["train"]) & set(parts["eval"]) and not set(parts["train"]) & set(parts["reference"])
    assert 0.65 < len(parts["train"]) / len(docs) < 0.85
    assert split_of("same text") == split_of("same text")
    assert builtin_documents(["pydoc"], "test") == parts["eval"]   # alias
    with pytest.raises(ConfigError, match="split"):
        builtin_documents(["pydoc"], "nonsense")


def test_records_load_from_text_jsonl_and_parquet(tmp_path):
    import datasets
    (tmp_path / "p.txt").write_text("first  prompt\nsecond\n\nthird\n")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": s}) + "\n" for s in ["x y", "z"]))
    datasets.Dataset.from_dict({"text": ["a", "b c"]}).to_parquet(str(tmp_path / "p.parquet"))
    assert load_records(str(tmp_path / "p.txt")) == ["first prompt", "second", "third"]
    assert load_records(str(tmp_path / "p.jsonl"), column="prompt") == ["x y", "z"]
    assert load_records(str(tmp_path / "p.parquet")) == ["a", "b c"]
    with pytest.raises(ConfigError, match="column"):
        load_records(str(tmp_path / "p.jsonl"))
    with pytest.raises(ConfigError, match="not found"):
        load_records(str(tmp_path / "missing.txt"))


def test_prompt_file_conditions_are_left_padded_to_a_fixed_width_and_null_masks_them(tokenizer, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Hi\n" + "\n".join(SENTENCES) + "\n")
    conditions = PromptConditions(tokenizer, tokenizer.mask_id, prompt_len=8, path=str(path), eval_fraction=0)
    g = torch.Generator().manual_seed(0)
    a, b = conditions.sample(5, g), conditions.sample(3, g, split="eval")
    assert a["input_ids"].shape == (5, 8) and cat_conditions(a, b)["input_ids"].shape == (8, 8)
    short = conditions.splits["train"]["attention_mask"][0]           # "Hi": [BOS] H i -> left-padded
    assert short.tolist() == [0] * (8 - short.sum()) + [1] * int(short.sum())
    ids = conditions.splits["train"]["input_ids"]
    assert (ids[conditions.splits["train"]["attention_mask"] == 0] == tokenizer.pad_id).all()
    assert tokenizer.hf.decode(ids[1][-3:]) == tokenizer.hf.decode(tokenizer.ids(SENTENCES[0])[-3:])  # keeps the end
    null = conditions.null(a)
    assert torch.equal(null["attention_mask"], a["attention_mask"])
    assert (null["input_ids"][a["attention_mask"] == 1] == tokenizer.mask_id).all()
    assert (null["input_ids"][a["attention_mask"] == 0] == tokenizer.pad_id).all()
    typed = conditions.from_text(["Hi"])  # dimo sample prompt="Hi": the same encoding as the file's
    assert torch.equal(typed["input_ids"][0], conditions.splits["train"]["input_ids"][0])


def test_prompt_file_train_and_eval_splits_are_disjoint(tokenizer, tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"prompt number {i}\n" for i in range(200)))
    conditions = PromptConditions(tokenizer, tokenizer.mask_id, prompt_len=6, path=str(path), eval_fraction=0.2)
    rows = {name: {tuple(r) for r in t["input_ids"].tolist()} for name, t in conditions.splits.items()}
    assert rows["train"] and rows["eval"] and not rows["train"] & rows["eval"]
    assert 20 < len(rows["eval"]) < 65
    eval_path = tmp_path / "held_out.txt"
    eval_path.write_text("only this one\n")
    separate = PromptConditions(tokenizer, tokenizer.mask_id, 6, str(path), eval_path=str(eval_path))
    assert separate.splits["eval"]["input_ids"].shape[0] == 1


def test_text_pairs_are_contiguous_windows_of_the_document_stream(tokenizer, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(SENTENCES * 20) + "\n")
    text = BuiltinText(tokenizer, files=[str(path)])
    pairs = TextPairs(text, prompt_len=4, response_len=6)
    split = split_of(normalize(SENTENCES[0]))   # every document of one sentence lands in one split
    tokens, cond = pairs.sample(16, torch.Generator().manual_seed(0), split)
    assert tokens.shape == (16, 6) and cond["input_ids"].shape == (16, 4) and cond["attention_mask"].all()
    stream = text.stream(split).ids.tolist()
    whole = torch.cat([cond["input_ids"], tokens], 1).tolist()
    assert all(any(stream[i:i + 10] == row for i in range(len(stream) - 9)) for row in whole)
    assert stream[0] == tokenizer.bos_id and tokenizer.hf.eos_token_id in stream


def test_bundled_prompts_are_windows_of_the_same_text(tokenizer):
    text = BuiltinText(tokenizer, sources=["pydoc"])
    conditions = PromptConditions(tokenizer, tokenizer.mask_id, prompt_len=10, text=text)
    cond = conditions.sample(4, torch.Generator().manual_seed(1), split="eval")
    assert cond["input_ids"].shape == (4, 10) and cond["attention_mask"].all()
    with pytest.raises(ConfigError, match="fewer than one window"):
        TokenStream(["hi"], tokenizer).windows(1, 50, torch.Generator())


def test_a_prompt_file_that_is_not_utf8_is_named(tmp_path):
    from dimo_core.errors import ConfigError
    from dimo_llada.corpus import load_records
    file = tmp_path / "prompts.txt"
    file.write_bytes(b"a red car\n\xff\xfe caf\xe9\n")
    with pytest.raises(ConfigError, match=r"prompts.txt is not UTF-8 text \(byte 10"):
        load_records(file)
