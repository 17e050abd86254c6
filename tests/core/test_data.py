import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sae_core.data import CorpusError, demo_documents, iter_contexts, iter_documents, special_ids
from tests.factories import tiny_tokenizer


@pytest.fixture
def tok():
    return tiny_tokenizer()


def test_txt_jsonl_parquet_and_folders_are_read(tmp_path):
    (tmp_path / "a.txt").write_text("plain text file")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "json line one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    pq.write_table(pa.table({"body": ["parquet row", None, "last"]}), tmp_path / "c.parquet")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert list(iter_documents(str(tmp_path / "a.txt"))) == ["plain text file"]
    assert list(iter_documents(str(tmp_path / "b.jsonl"), text_field="body")) == ["json line one", "two"]
    assert list(iter_documents(str(tmp_path / "c.parquet"), text_field="body")) == ["parquet row", "last"]
    folder = list(iter_documents(str(tmp_path), text_field="body"))
    assert folder == ["plain text file", "json line one", "two", "parquet row", "last"]


def test_large_txt_streams_in_blocks_without_losing_text(tmp_path):
    text = "".join(f"paragraph {i} " * 50 + "\n\n" for i in range(400))
    (tmp_path / "big.txt").write_text(text)
    blocks = list(iter_documents(str(tmp_path / "big.txt")))
    assert len(blocks) > 1 and "".join(blocks) == text


@pytest.mark.parametrize("content,message", [
    ('{"text": 3}\n', "holds int, not text"),
    ('{"other": "x"}\n', "no field 'text' \\(found: other\\)"),
    ("not json\n", ":1: not JSON"),
])
def test_bad_jsonl_names_the_line_and_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CorpusError, match=message):
        list(iter_documents(str(path)))


def test_binary_txt_is_rejected(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorpusError, match="not UTF-8"):
        list(iter_documents(str(tmp_path / "bin.txt")))


def test_missing_and_unsupported_inputs(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        iter_documents(str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="holds no"):
        list(iter_documents(str(tmp_path)))
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(CorpusError, match="not a readable parquet"):
        list(iter_documents(str(tmp_path / "x.parquet")))


def test_unknown_hub_dataset_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CorpusError, match="cannot load dataset 'no-org/no-such-set'"):
        list(iter_documents("no-org/no-such-set"))


def test_contexts_start_with_bos_and_have_fixed_length(tok):
    docs = ["hello world " * 20, "second document", "x" * 100]
    contexts = list(iter_contexts(docs, tok, context_len=16))
    assert all(c.shape == (16,) and c[0] == tok.bos_token_id for c in contexts)
    stream = torch.cat([c[1:] for c in contexts]).tolist()
    expected = []
    for d in docs:
        expected += [*tok(d, add_special_tokens=False).input_ids, tok.eos_token_id]
    assert stream == expected[: len(stream)] and len(expected) - len(stream) < 15


def test_empty_corpus_and_too_short_corpus_are_errors(tok):
    with pytest.raises(CorpusError, match="empty"):
        list(iter_contexts(["", "   \n"], tok, 16))
    with pytest.raises(CorpusError, match="fewer than 15 tokens"):
        list(iter_contexts(["short"], tok, 16))


def test_demo_corpus_is_deterministic_and_mixes_prose_and_code():
    first = list(itertools.islice(demo_documents(), 40))
    again = list(itertools.islice(demo_documents(), 40))
    assert first == again
    code = sum("def " in d or "import " in d for d in first)
    assert 5 < code < 35


def test_special_ids_cover_bos_eos_pad(tok):
    assert special_ids(tok).tolist() == [0, 1, 2]
