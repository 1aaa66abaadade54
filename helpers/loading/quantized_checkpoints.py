"""Quantize once, reload fast: save a pipeline's bitsandbytes-quantized transformer (and T5).

diffusers and transformers serialise bitsandbytes NF4/int8 models with `save_pretrained`; the
quantization config travels in config.json, so `from_pretrained(folder)` loads the packed weights
directly, without reading (or quantizing) the 16 GB of bf16 weights again.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

from ..generation.validation import check_pipeline
from ..output_folders import check_folder, finished_folder, leftovers
from .local_folders import check_local_source

# Components `save_quantized` writes when they are quantized, as pipeline subfolder names.
QUANTIZABLE = ("transformer", "text_encoder_3")


def is_quantized(module) -> bool:
    """True when `module` was loaded with a bitsandbytes quantization config."""
    return bool(getattr(module, "is_quantized", False)) or getattr(module, "hf_quantizer", None) is not None


def save_quantized(pipe, folder) -> dict[str, Path]:
    """Save the quantized components of `pipe` (transformer, and T5 when quantized) under `folder`
    as `folder/transformer` and `folder/text_encoder_3`; return {component: subfolder}.

    Refuses to write into an existing non-empty folder, so nothing saved earlier is overwritten.
    The save goes to a temporary sibling folder renamed into place when whole: a full disk or an
    interrupt leaves no half-written checkpoint under `folder`.
    Save right after loading: on CPU, bitsandbytes repacks 4-bit weights at the first forward pass
    (keeping their scales in bf16), so a save after generating reloads as a slightly different model.
    """
    check_pipeline(pipe, "save_quantized", allow_released=True)  # a released one is refused below
    folder = check_folder(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} already exists and is not empty: choose a new folder (nothing is overwritten)."
        )
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise ValueError("This pipeline has no transformer (it was released?): load it again.")
    if not is_quantized(transformer):
        raise ValueError(
            "The transformer is not quantized, so there is nothing to save here: load it with a "
            "BitsAndBytesConfig (e.g. load_pipeline('sd35-large-nf4')), or use pipe.save_pretrained."
        )
    saved = {}
    with finished_folder(folder) as scratch:
        for name in QUANTIZABLE:
            component = getattr(pipe, name, None)
            if component is not None and is_quantized(component):
                try:
                    component.save_pretrained(scratch / name)
                except Exception as e:
                    if not _disk_full(e):
                        raise
                    raise OSError(errno.ENOSPC, f"{folder} could not be written ({str(e)[:200]}): is the disk "
                                                "full? Nothing was left behind; free some space (the NF4 "
                                                "transformer of SD3.5 Large is about 5 GB) and save again.") from e
                saved[name] = folder / name
    return saved


# What a full disk (or quota, or file-size limit) says: as errno from Python, as text from Rust (safetensors).
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL_TEXT = ("No space left", "File too large", "Disk quota exceeded", "StorageFull", "FileTooLarge")


def _disk_full(error: BaseException) -> bool:
    """Whether `error` (safetensors' SafetensorError included, which is no OSError) is a refused write."""
    if isinstance(error, OSError) and error.errno in _FULL:
        return True
    return any(text in str(error) for text in _FULL_TEXT)


def transformer_folder(source) -> tuple[str, str | None]:
    """(id, subfolder) to pass to `SD3Transformer2DModel.from_pretrained` for `source`: a folder
    written by `save_quantized` (has transformer/), a transformer folder itself, or a Hub id."""
    path = Path(source)
    if (path / "transformer" / "config.json").is_file():
        return str(path), "transformer"
    return str(source), None


def saved_quantization(source) -> str | None:
    """"nf4", "int8" or None (not quantized) for a local transformer folder, read from its
    config.json; None also when `source` is a Hub id (not looked up: no network here)."""
    folder, subfolder = transformer_folder(source)
    config = Path(folder) / (subfolder or "") / "config.json"
    if not config.is_file():
        return None
    quantization = json.loads(config.read_text()).get("quantization_config") or {}
    if quantization.get("load_in_4bit"):
        return quantization.get("bnb_4bit_quant_type", "nf4")
    if quantization.get("load_in_8bit"):
        return "int8"
    return None


def folder_bytes(folder) -> int:
    """Bytes of every file under `folder` (its size on disk, ignoring filesystem blocks)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def check_transformer_source(transformer) -> str | None:
    """Validate `transformer=` before loading; return the quantization saved in it, if known."""
    if not isinstance(transformer, (str, Path)) or not str(transformer):
        raise ValueError(f"transformer must be a folder or a Hub id, not {transformer!r}.")
    try:
        unfinished = [] if Path(transformer).exists() else leftovers(Path(transformer).parent, Path(transformer).name)
    except OSError:  # e.g. a name too long for the file system: check_local_source names it below
        unfinished = []
    if unfinished:  # a hard kill mid-save left only its temporary folder
        raise ValueError(f"transformer={str(transformer)!r} does not exist, but {unfinished[0]} is an unfinished "
                         "save_quantized (interrupted): save again.")
    if check_local_source(str(transformer), kind="transformer"):  # a folder: refused with what is missing
        return saved_quantization(transformer)
    folder, subfolder = transformer_folder(transformer)
    looks_like_repo = str(transformer).count("/") == 1 and not str(transformer).startswith((".", "/", "~"))
    if not (Path(folder) / (subfolder or "") / "config.json").is_file() and (
        Path(transformer).exists() or not looks_like_repo
    ):
        unfinished = leftovers(Path(transformer).parent, Path(transformer).name)
        raise ValueError(
            f"transformer={str(transformer)!r} is neither a folder with a saved transformer "
            "(config.json, or transformer/config.json as save_quantized writes) nor a Hub id."
            + (f" {unfinished[0]} is an unfinished save_quantized (interrupted): save again." if unfinished else "")
        )
    return saved_quantization(transformer)
