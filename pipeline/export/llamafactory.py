"""LLaMA-Factory's ``dataset_info.json``: one entry per shard of every format it reads.

The attribute names are LLaMA-Factory's own (hiyouga/LLaMA-Factory, src/llamafactory/data/
parser.py, ``DatasetAttr.join``: ``formatting``, ``columns`` and ``tags``; converter.py reads
them): a ``file_name`` relative to the ``dataset_dir`` (the export folder) names one file,
and a ``columns`` mapping replaces every column default, so only the columns given are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Entries by format; `messages` keeps its key unprefixed, as exports before formats named it.
_ENTRIES: dict[str, dict[str, Any]] = {
    "messages": {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    },
    "sharegpt": {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
        },
    },
    "alpaca": {
        "formatting": "alpaca",
        "columns": {
            "prompt": "instruction",
            "query": "input",
            "response": "output",
            "system": "system",
            "history": "history",
        },
    },
    # Alpaca's converter joins prompt and query; with no query, the prompt alone.
    "flan": {"formatting": "alpaca", "columns": {"prompt": "inputs", "response": "targets"}},
}


def llamafactory_info(name: str, files: Mapping[str, Mapping[str, list[str]]]) -> dict[str, Any]:
    """Entries named ``<recipe>_<split>`` (messages) or ``<recipe>_<format>_<split>``, with
    ``_<shard>`` when a split has several shards; ``files`` are the parquet shards by format
    and split. prompt_completion has no LLaMA-Factory layout and gets no entry."""
    info: dict[str, Any] = {}
    for fmt, by_split in files.items():
        entry = _ENTRIES.get(fmt)
        if entry is None:
            continue
        stem = name if fmt == "messages" else f"{name}_{fmt}"
        for split, paths in by_split.items():
            for i, path in enumerate(paths):
                key = f"{stem}_{split}" if len(paths) == 1 else f"{stem}_{split}_{i:05d}"
                info[key] = {"file_name": path, **entry}
    return info
