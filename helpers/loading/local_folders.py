"""Checks on a local model folder before diffusers reads it: one sentence saying what is missing.

A folder `save_pretrained` (or `save_quantized`) wrote holds a `model_index.json` (a pipeline) or a
`config.json` (one model), and each model's weights beside its config. An empty folder, a broken
config, a config without weights or a truncated `.safetensors` file would otherwise fail deep inside
diffusers; here they fail first with "not a saved pipeline or transformer folder: <path>: <what>".
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

LONGEST_NAME = 255  # a preset name or Hub id is far shorter; most file systems stop at 255 per name
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


class NotAModelFolderError(ValueError):
    """A local path given as a model or transformer is not a folder diffusers can load."""


def _refuse(path, what: str) -> NotAModelFolderError:
    shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...({len(str(path))} characters)"
    return NotAModelFolderError(f"not a saved pipeline or transformer folder: {shown}: {what}.")


def looks_like_a_path(source: str) -> bool:
    """True for text written as a path ('./x', '/x', '~/x', 'a/b/c', 'C:\\x') or too long to be a
    name; a single 'owner/name' is a Hub id unless such a folder exists."""
    return (source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
            or len(source) > LONGEST_NAME or exists(source))


def exists(source) -> bool:
    """Whether `source` is an existing file or folder; a name the file system refuses (too long,
    bad characters) is not one."""
    try:
        return Path(source).expanduser().exists()
    except (OSError, ValueError):
        return False


def _folder(source) -> Path:
    """`source` as an existing folder, or the reason it is not one."""
    if len(str(source)) > LONGEST_NAME and not exists(source):
        raise _refuse(source, "the name is too long to be a folder, a preset or a Hub id")
    path = Path(source).expanduser()
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise _refuse(source, "the name is too long for this file system") from None
        raise _refuse(source, "there is no such folder") from None
    if not path.is_dir():
        raise _refuse(source, "it is a file, not a folder")
    return path


def _read_json(path: Path, source) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _refuse(source, f"{path.name} in {path.parent.name or path.parent} cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise _refuse(source, f"{path.name} holds a {type(data).__name__}, not the settings of a model")
    return data


def _weights_problem(folder: Path, source) -> str | None:
    """What is wrong with the weights of the model in `folder` (which holds its config.json), or None."""
    files = [f for f in folder.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)]
    if not files:
        return f"{folder.name}/ has config.json but no weights (.safetensors or .bin)"
    shards = set()
    for index in [f for f in files if f.name.endswith(".index.json")]:
        weight_map = _read_json(index, source).get("weight_map", {})
        shards |= set(weight_map.values()) if isinstance(weight_map, dict) else set()
    for name in sorted(shards):
        if not (folder / name).is_file():
            return f"{folder.name}/{name}, one of the shards its index lists, is missing"
    for file in files:
        if file.name.endswith(".safetensors"):
            problem = _safetensors_problem(file)
            if problem:
                return f"{folder.name}/{file.name} {problem}"
    return None


def _safetensors_problem(file: Path) -> str | None:
    """Open the file's header with safetensors itself: a file cut short fails here, not mid-load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):
            return None
    except (SafetensorError, OSError) as e:
        return f"is damaged or was cut short ({file.stat().st_size} bytes; safetensors says: {e})"


def _check_model(folder: Path, source) -> None:
    config = folder / "config.json"
    if not config.is_file():
        raise _refuse(source, f"{folder.name}/config.json is missing")
    _read_json(config, source)
    problem = _weights_problem(folder, source)
    if problem:
        raise _refuse(source, problem)


def check_pipeline_folder(source) -> None:
    """`source` must be a folder a pipeline was saved to: model_index.json, and for every component it
    lists a subfolder, with config.json and intact weights for each model (not tokenizers/schedulers)."""
    path = _folder(source)
    index = path / "model_index.json"
    if not index.is_file():
        found = "it is empty" if not any(path.iterdir()) else "it has no model_index.json (save_pretrained writes one)"
        raise _refuse(source, found)
    components = {name: entry for name, entry in _read_json(index, source).items()
                  if not name.startswith("_") and isinstance(entry, list) and None not in entry}
    if "transformer" not in components:
        raise _refuse(source, "its model_index.json lists no transformer: it is not a Stable Diffusion 3 pipeline")
    for name, (_, class_name) in components.items():
        folder = path / name
        if not folder.is_dir():
            raise _refuse(source, f"{name}/ is missing, though model_index.json lists it")
        if "Tokenizer" not in class_name and "Scheduler" not in class_name:
            _check_model(folder, source)


def check_transformer_folder(source) -> None:
    """`source` must hold a saved transformer: transformer/config.json (as save_quantized writes it) or
    config.json itself, each with intact weights beside it."""
    path = _folder(source)
    if (path / "transformer").is_dir():
        _check_model(path / "transformer", source)
    elif (path / "config.json").is_file():
        _check_model(path, source)
    else:
        found = "it is empty" if not any(path.iterdir()) else "it has neither transformer/config.json nor config.json"
        raise _refuse(source, found)


def check_local_source(source, kind: str = "pipeline") -> bool:
    """True when `source` is a local folder (checked, or refused with what is missing); False when it
    is a name to look up instead (a preset, a Hub id)."""
    if not isinstance(source, (str, os.PathLike)) or (isinstance(source, str) and not looks_like_a_path(source)):
        return False
    (check_pipeline_folder if kind == "pipeline" else check_transformer_folder)(source)
    return True
