"""Corpora as streams of documents, and their packing into fixed-length token contexts."""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers takes seconds to import; only model-running paths import it
    from transformers import PreTrainedTokenizerBase

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
DEFAULT_CONTEXT = 128
_TOKENIZE_BATCH = 64


class CorpusError(ValueError):
    """A corpus that cannot be read as text; the message says which file and why."""


def iter_documents(dataset: str, text_field: str = "text", split: str = "train") -> Iterator[str]:
    """Documents of a corpus: `demo`, a local file or folder, or a Hugging Face dataset name."""
    if dataset == "demo":
        return demo_documents()
    path = Path(dataset).expanduser()
    if path.is_dir():
        return _folder_documents(path, text_field)
    if path.is_file():
        return _file_documents(path, text_field)
    if path.suffix in TEXT_SUFFIXES:
        raise CorpusError(f"corpus file not found: {path}")
    return _hub_documents(dataset, text_field, split)


def _folder_documents(folder: Path, text_field: str) -> Iterator[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise CorpusError(f"{folder} holds no {', '.join(TEXT_SUFFIXES)} files")
    for file in files:
        yield from _file_documents(file, text_field)


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    readers = {".txt": _txt_documents, ".jsonl": _jsonl_documents, ".parquet": _parquet_documents}
    reader = readers.get(path.suffix)
    if reader is None:
        raise CorpusError(f"{path}: unsupported corpus file type; use {', '.join(TEXT_SUFFIXES)} or a folder")
    return reader(path, text_field)


def _txt_documents(path: Path, _text_field: str) -> Iterator[str]:
    """A text file is one document, read in blank-line-separated blocks so huge files stream."""
    block: list[str] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                block.append(line)
                if not line.strip() and sum(map(len, block)) > 1 << 16:
                    yield "".join(block)
                    block = []
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if block:
        yield "".join(block)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield _text_of(_parse_json_line(line, path, number), text_field, f"{path}:{number}")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err.reason})") from None


def _parse_json_line(line: str, path: Path, number: int) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}:{number}: not JSON ({err.msg})") from None


def _text_of(record: object, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise CorpusError(f"{where}: no field {text_field!r} (found: {fields}); choose one with --text-field")
    text = record[text_field]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_field!r} holds {type(text).__name__}, not text")
    return text


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise CorpusError(f"{path}: not a readable parquet file ({err})") from None
    if text_field not in table.schema_arrow.names:
        names = ", ".join(table.schema_arrow.names)
        raise CorpusError(f"{path}: no column {text_field!r} (found: {names}); choose one with --text-field")
    for batch in table.iter_batches(columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None and not isinstance(text, str):
                raise CorpusError(f"{path}: column {text_field!r} holds {type(text).__name__}, not text")
            if text:
                yield text


def _hub_documents(name: str, text_field: str, split: str) -> Iterator[str]:
    """A Hugging Face dataset, streamed; `name` may carry a config as `name:config`."""
    import datasets

    repo, _, config = name.partition(":")
    try:
        stream = datasets.load_dataset(repo, config or None, split=split, streaming=True)
    except Exception as err:  # datasets raises many types (hub, connection, file-not-found)
        raise CorpusError(
            f"cannot load dataset {name!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
            "use `demo`, a local .txt/.jsonl/.parquet file or folder, or a dataset on the hub"
        ) from None
    for number, record in enumerate(stream):
        yield _text_of(record, text_field, f"{name}[{number}]")


def demo_documents() -> Iterator[str]:
    """An offline corpus from the running Python: pydoc topics, module docstrings and source code.

    It mixes prose and code in equal volume (until the prose runs out) so that an SAE sees both, and its order
    depends only on the Python installation, so a run is reproducible on one machine.
    """
    return _interleave(_demo_prose(), _demo_code())


def _interleave(*streams: Iterable[str]) -> Iterator[str]:
    """Merge streams by volume: the next document comes from the stream that has given the fewest characters."""
    live = {i: iter(stream) for i, stream in enumerate(streams)}
    volume = dict.fromkeys(live, 0)
    while live:
        index = min(live, key=volume.__getitem__)
        item = next(live[index], None)
        if item is None:
            del live[index]
            continue
        volume[index] += len(item)
        yield item


def _stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo")
    return sorted(p for p in root.rglob("*.py") if not set(p.relative_to(root).parts) & set(skip))


def _demo_prose() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]
    for path in _stdlib_sources():
        docstrings = _long_docstrings(path)
        if docstrings:
            yield "\n\n".join(docstrings)


def _long_docstrings(path: Path, min_chars: int = 200) -> list[str]:
    """The module, class and function docstrings of a source file that are long enough to be prose."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    docs = (ast.get_docstring(node) for node in nodes)
    return [doc for doc in docs if doc and len(doc) >= min_chars]


def _demo_code() -> Iterator[str]:
    for path in _stdlib_sources():
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def bos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that opens every context: BOS, or EOS for tokenizers without one (GPT-2 style)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise CorpusError("the tokenizer has neither a BOS nor an EOS token to open contexts with")
    return token


def special_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Ids whose activations are left out of harvested data: their norms are outliers."""
    ids = set(tokenizer.all_special_ids) | {bos_id(tokenizer)}
    return torch.tensor(sorted(ids), dtype=torch.long)


def iter_contexts(
    documents: Iterable[str], tokenizer: PreTrainedTokenizerBase, context_len: int = DEFAULT_CONTEXT
) -> Iterator[torch.Tensor]:
    """Pack documents into [context_len] token contexts that each start with BOS.

    Documents are concatenated with an EOS between them (the usual pretraining packing); each context
    takes the next context_len - 1 tokens of that stream after its BOS. The last partial context is
    dropped so every context has the same length.
    """
    if context_len < 2:
        raise CorpusError(f"context length must be at least 2, got {context_len}")
    bos = bos_id(tokenizer)
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    body = context_len - 1
    buffer: list[int] = []
    produced = 0
    for ids in _tokenized(documents, tokenizer):
        buffer.extend(ids)
        buffer.extend(separator)
        while len(buffer) >= body:
            yield torch.tensor([bos, *buffer[:body]], dtype=torch.long)
            produced += 1
            del buffer[:body]
    if produced == 0:
        raise CorpusError(f"the corpus holds fewer than {body} tokens: not one context of {context_len}")


def _tokenized(documents: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> Iterator[list[int]]:
    """Token ids of each non-empty document, tokenised in batches for the fast tokenizer's threads."""
    texts = (doc for doc in documents if doc.strip())
    seen_text = False
    while batch := list(islice(texts, _TOKENIZE_BATCH)):
        seen_text = True
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
    if not seen_text:
        raise CorpusError("the corpus is empty: it holds no text")
