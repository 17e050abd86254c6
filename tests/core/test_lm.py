import pytest
import torch

from sae_core.lm import ModelLoadError, load_model, parse_dtype, resolve_model_spec


def test_local_directory_loads_through_the_hub_code_path(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert not lm.model.training
    assert all(not p.requires_grad for p in lm.model.parameters())
    assert lm.tokenizer.bos_token_id == 0
    assert lm.name == tiny_model_dir.name


def test_local_directory_loads_in_bfloat16(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_unknown_name_lists_the_choices():
    with pytest.raises(ModelLoadError, match="built-in names \\(smollm2\\)"):
        load_model("no-such-model")


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_missing_gguf_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "m.gguf"))


def test_corrupt_model_directory_gives_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(tmp_path))


def test_hub_ids_resolve_to_themselves():
    assert resolve_model_spec("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", {}, "HuggingFaceTB/SmolLM2-135M")


def test_a_built_in_models_display_name_loads_the_built_in_model():
    """An SAE trained on the built-in model records its display name, and is imported with no other spec."""
    path, kwargs, name = resolve_model_spec("smollm2")
    assert resolve_model_spec(name) == (path, kwargs, name) and name == "SmolLM2-135M-Instruct"


def test_parse_dtype_rejects_unknown_names():
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        parse_dtype("int3")
