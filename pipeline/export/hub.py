"""Pushing an export to the Hub, and keeping every Hub secret out of what the tool prints."""

from __future__ import annotations

import configparser
import os
import re
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .stage import FINAL_LAYOUT, MARKER, SHOWN, read_marker, scan_export


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload an export folder as a dataset repo; the token comes from the environment or the
    login cache when not given, and is never printed. Returns the repo URL.

    Only an export is uploaded: a folder holding files no export wrote is refused, so nothing
    of the user's is published by mistake."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise PipelineError(f"{folder}: not an export folder (no README.md); run export first")
    marker = read_marker(folder)
    if marker is not None and marker["complete"] is True:
        foreign = scan_export(folder, marker["files"], None, limit=SHOWN + 1)[1]
    else:
        foreign = scan_export(folder, {}, FINAL_LAYOUT, limit=SHOWN + 1)[1]  # an older export
    if foreign:
        shown = ", ".join(foreign[:SHOWN]) + (", ..." if len(foreign) > SHOWN else "")
        raise PipelineError(
            f"{folder}: holds files no instructmix export wrote ({shown}); "
            "push uploads only an export folder"
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message="Upload instructmix export",
            ignore_patterns=[MARKER],  # local bookkeeping, not part of the dataset
        )
    except Exception as exc:
        # Hub errors can echo request headers; keep only the first line of the message.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"push to hub {repo_id!r} failed: {redact_secrets(first, token)}"
        ) from None
    return str(url)


# Environment variables huggingface_hub takes a secret from (utils/_auth.py, _oidc.py).
TOKEN_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_ID_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)
# User (hf_) and organisation (api_org_) tokens: the backstop for a token not known by value.
# It also hides identifiers such as hf_hub_download; a message a little less clear is the price.
_TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9])(hf|api_org)_[A-Za-z0-9_-]{8,}")
# Shorter values are no real token, and replacing them would garble the message (a "1" in 401).
_MIN_SECRET = 8
_MAX_SECRET_FILE = 1 << 16


def redact_secrets(text: str, token: str | None = None) -> str:
    """``text`` with every Hub secret this process could have sent replaced by ``***``: the
    token given, the token variables of the environment, the login cache (token file and
    stored tokens, read from disk, never refreshed over the network), huggingface_hub's
    in-process token caches; then anything shaped like a Hub token by the pattern."""
    for secret in sorted(_known_secrets(token), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub(lambda m: f"{m.group(1)}_***", text)


def _known_secrets(token: str | None) -> set[str]:
    values: list[object] = [token, *(os.environ.get(name) for name in TOKEN_VARIABLES)]
    values += _login_cache_secrets()
    values += _in_process_secrets()
    secrets = set()
    for value in values:
        if isinstance(value, str):
            # huggingface_hub sends the value without newlines and surrounding spaces.
            for form in (value, value.replace("\r", "").replace("\n", "").strip()):
                if len(form) >= _MIN_SECRET:
                    secrets.add(form)
    return secrets


def _token_paths() -> set[str]:
    """The login token file as huggingface_hub finds it now (HF_TOKEN_PATH, HF_HOME,
    XDG_CACHE_HOME) and as it found it when imported (its constants)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    home = os.path.expandvars(
        os.path.expanduser(os.environ.get("HF_HOME", os.path.join(cache, "huggingface")))
    )
    paths = {
        os.path.expandvars(
            os.path.expanduser(os.environ.get("HF_TOKEN_PATH", os.path.join(home, "token")))
        )
    }
    constants = sys.modules.get("huggingface_hub.constants")
    imported = getattr(constants, "HF_TOKEN_PATH", None)
    if isinstance(imported, str):
        paths.add(imported)
    return paths


def _login_cache_secrets() -> list[str]:
    found = []
    for token_path in _token_paths():
        text = _read_small(Path(token_path))
        if text is not None:
            found.append(text)
        stored = _read_small(Path(token_path).parent / "stored_tokens")
        if stored is not None:
            config = configparser.ConfigParser(interpolation=None)
            with suppress(configparser.Error):
                config.read_string(stored)
                for section in config.sections():
                    for key in ("hf_token", "refresh_token"):
                        if config.has_option(section, key):
                            found.append(config.get(section, key))
    return found


def _read_small(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(_MAX_SECRET_FILE)
    except OSError:
        return None


def _in_process_secrets() -> list[object]:
    """Tokens huggingface_hub obtained in this process and keeps only in memory (an OIDC
    exchange, a refreshed OAuth token, a Colab secret). Private names: read defensively."""
    auth = sys.modules.get("huggingface_hub.utils._auth")
    if auth is None:
        return []
    found: list[object] = [getattr(auth, "_GOOGLE_COLAB_SECRET", None)]
    for cache in (
        getattr(auth, "_OIDC_TOKEN_CACHE", None),
        getattr(auth, "_OAUTH_REFRESH_CACHE", None),
    ):
        if isinstance(cache, dict):
            found += [cache.get(key) for key in ("token", "file_token", "resolved_token")]
    return found
