"""Real English text that needs no hub: Debian's fortunes and CPython's pydoc topics, in fixed splits.

A document's split is decided by a hash of its text, so it never changes between runs or machines
and duplicated quotations (fortunes repeats some across files) always land in the same split:
- ``train`` (75 %): the teacher's training text, the tokenizer's, and the prompts for distillation;
- ``reference`` (20 %): the text the autoregressive scorer is trained on (held out from the teacher);
- ``eval`` (5 %): held out from both; prompts at evaluation and the scorer's validation perplexity.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from dimo_core.errors import ConfigError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
SKIPPED_FORTUNE_FILES = {"ascii-art"}  # pictures, not prose
SPLIT_BUCKETS = {"train": (0, 75), "reference": (75, 95), "eval": (95, 100)}  # of 100 hash buckets
SPLIT_ALIASES = {"test": "eval", "validation": "eval", "heldout": "reference"}
SOURCES = ("fortunes", "pydoc")


def canonical_split(split: str) -> str:
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLIT_BUCKETS:
        raise ConfigError(f"unknown split {split!r}; text splits are {', '.join(SPLIT_BUCKETS)} "
                          f"(aliases: {', '.join(SPLIT_ALIASES)})")
    return split


def normalize(text: str) -> str:
    """One line, single spaces: fortunes' line wrapping and indentation are layout, not language."""
    return " ".join(text.split())


def split_of(text: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 100
    return next(name for name, (lo, hi) in SPLIT_BUCKETS.items() if lo <= bucket < hi)


def fortunes_documents(directory: Path = FORTUNES_DIR) -> list[str]:
    """Every quotation of every fortunes file (they are separated by lines holding only '%')."""
    files = sorted(p for p in directory.glob("*") if p.is_file() and not p.is_symlink() and not p.suffix
                   and p.name not in SKIPPED_FORTUNE_FILES)
    if not files:
        raise ConfigError(f"no fortunes files under {directory}; install them (apt-get install fortunes) "
                          f"or use sources=[pydoc] or files=[...]")
    docs = []
    for path in files:
        chunk: list[str] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines() + ["%"]:
            if line.strip() == "%":
                if text := normalize("\n".join(chunk)):
                    docs.append(text)
                chunk = []
            else:
                chunk.append(line)
    return docs


def pydoc_documents() -> list[str]:
    """CPython's own documentation topics, one document per paragraph (always installed)."""
    from pydoc_data.topics import topics
    return [text for name in sorted(topics) for par in topics[name].split("\n\n") if (text := normalize(par))]


def builtin_documents(sources: list[str] | tuple[str, ...] = ("fortunes",), split: str | None = None) -> list[str]:
    """Documents of the bundled sources (all splits when ``split`` is None), deduplicated, in a fixed order."""
    readers = {"fortunes": fortunes_documents, "pydoc": pydoc_documents}
    docs: dict[str, None] = {}
    for source in sources:
        if source not in readers:
            raise ConfigError(f"unknown text source {source!r}; bundled sources are {', '.join(SOURCES)}")
        docs.update(dict.fromkeys(readers[source]()))
    split = canonical_split(split) if split else None
    return [d for d in docs if split is None or split_of(d) == split]


def load_records(path: str, column: str = "text") -> list[str]:
    """Text records of a local .txt (one per line), .json/.jsonl or .parquet file, via ``datasets``."""
    import datasets
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"text file {path} not found")
    builder = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(
        file.suffix.lower())
    if builder is None:
        raise ConfigError(f"{path}: unsupported file type {file.suffix!r}; use .txt, .json, .jsonl or .parquet")
    if builder in ("text", "json"):  # else a UnicodeDecodeError from deep inside `datasets`
        try:
            file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                              f"save it as UTF-8") from None
    table = datasets.load_dataset(builder, data_files=str(file), split="train")
    if column not in table.column_names:
        raise ConfigError(f"{path} has no column {column!r}; its columns are {', '.join(table.column_names)} "
                          f"(set the `column` option)")
    return [text for value in table[column] if value is not None and (text := normalize(str(value)))]
