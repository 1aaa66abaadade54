"""Finding the Hugging Face token, and saying exactly what to do when a gated model refuses us.

The token is looked up the way `huggingface_hub` does it everywhere (the `HF_TOKEN` environment
variable, the cached `hf auth login`, or the `HF_TOKEN` secret on Colab). It is passed on to the
Hub and never printed, logged or stored by this package.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

from ..errors import GatedModelError
from . import local_folders
from .presets import LARGE, LARGE_TURBO, MEDIUM, PRESETS


def find_token() -> str | None:
    """The user's token from env, cached login or Colab secret; None when there is none."""
    return huggingface_hub.get_token()


def offline() -> bool:
    """True when HF_HUB_OFFLINE forbids the Hub (as in this project's tests)."""
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def is_cached(repo_id: str) -> bool:
    """True when the pipeline's index is on this machine: in the local Hugging Face cache, or
    `repo_id` is a folder holding a saved pipeline (a path is not a Hub id: never looked up)."""
    if not isinstance(repo_id, (str, Path)):
        raise TypeError(f"repo_id must be a Hub id or a folder, not {type(repo_id).__name__} {repo_id!r}.")
    if local_folders.exists(repo_id):
        return (Path(repo_id).expanduser() / "model_index.json").is_file()
    try:
        path = huggingface_hub.try_to_load_from_cache(repo_id, "model_index.json")
    except HFValidationError:  # neither a folder nor a valid Hub id: certainly not cached
        return False
    return isinstance(path, str)


def access_instructions(repo_id: str) -> str:
    """What a user must do, step by step, to load the gated `repo_id`."""
    return (
        f"{repo_id} is a gated model: Hugging Face needs to know you accepted its licence.\n"
        f"  1. Open https://huggingface.co/{repo_id} while logged in and accept the licence.\n"
        "  2. Create a token (read access is enough) at https://huggingface.co/settings/tokens.\n"
        "  3. Give it to this notebook: on Colab add a secret named HF_TOKEN (key icon, left bar) and\n"
        "     allow this notebook to read it; elsewhere run `hf auth login` in a terminal or set the\n"
        "     HF_TOKEN environment variable before starting Jupyter.\n"
        "No model is needed to try the notebooks: pass stand_in=True for the offline stand-in."
    )


def require_access(repo_id: str, token: str | None) -> None:
    """Raise GatedModelError before any download when a gated model has neither a token nor a
    local copy to load from."""
    if token is None and not is_cached(repo_id):
        raise GatedModelError("No Hugging Face token was found.\n" + access_instructions(repo_id))


def require_model(repo_id: str, token: str | None) -> None:
    """Raise FileNotFoundError, before any memory check, when `repo_id` (a Hub id that is no preset)
    is nowhere to be found: not cached while offline, or (online, one request) unknown to the Hub."""
    if is_cached(repo_id):
        return
    close = difflib.get_close_matches(repo_id, [LARGE, MEDIUM, LARGE_TURBO, *PRESETS], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if offline():
        raise FileNotFoundError(
            f"HF_HUB_OFFLINE is set and {repo_id} is not in the local Hugging Face cache, and it is not a "
            f"known preset.{hint} Download it once with a network connection, or use stand_in=True."
        )
    try:
        found = huggingface_hub.repo_exists(repo_id, token=token)
    except Exception:  # no answer (network, rate limit): diffusers will ask again and say why
        return
    if not found:
        raise FileNotFoundError(
            f"The Hub has no model {repo_id} (or it is private and this token cannot see it), and it is "
            f"not a known preset.{hint} Check the spelling, or use a preset: {', '.join(PRESETS)}."
        )


def explain_hub_error(error: Exception, repo_id: str) -> Exception | None:
    """Turn the Hub's refusal of a gated or unknown repo into a GatedModelError that says what to
    do; None when `error` is something else. diffusers re-raises the Hub's errors as OSError, so
    the causes behind `error` are looked at too."""
    while error is not None and not isinstance(error, HfHubHTTPError):
        error = error.__cause__ or error.__context__
    if isinstance(error, GatedRepoError):
        return GatedModelError(
            "Your token does not have access to this model yet.\n" + access_instructions(repo_id)
        )
    if isinstance(error, RepositoryNotFoundError):
        return GatedModelError(
            f"The Hub did not find {repo_id} for this token: check the spelling, or accept the "
            "licence if it is gated.\n" + access_instructions(repo_id)
        )
    if isinstance(error, HfHubHTTPError) and getattr(error.response, "status_code", None) in (401, 403):
        return GatedModelError("The Hub refused the token.\n" + access_instructions(repo_id))
    return None
