"""A part's records built as Arrow columns, not as one dict per record.

The renderer hands over each record's content (turns, choices, gold answers); what is the same
for every record of a source (its name, task, cluster, licence) is written once per column, the
messages go into one flat role/content array with offsets, and the table is assembled from
those arrays at the end. The rows are those ``render.to_record`` makes, column for column: the
tests compare both on every shipped template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .catalog import Source
from .load import Example
from .render import Rendered, record_ids
from .runfolder import MESSAGE_TYPE, PART_SCHEMA


class RecordColumns:
    """Records of one source, appended one by one and turned into a ``PART_SCHEMA`` table."""

    def __init__(self, source: Source) -> None:
        spec = source.spec
        self._spec = spec
        self._ids = record_ids(spec.name)
        self._roles: list[str] = []
        self._contents: list[str] = []
        self._offsets: list[int] = [0]
        self.template_id: list[str] = []
        self.variant: list[str] = []
        self.answer_choices: list[list[str] | None] = []
        self.gold_answers: list[list[str] | None] = []
        self.example_id: list[str] = []
        self.split: list[str] = []
        self.language: list[str] = []
        self.license: list[str] = []
        self.out_split: list[str | None] = []

    def add(self, example: Example, rendered: Rendered) -> None:
        r = rendered
        self.add_turns(example, r.template_id, r.variant, r.system, r.turns, r.answer_choices,
                       r.gold_answers)  # fmt: skip

    def add_turns(
        self,
        example: Example,
        template_id: str,
        variant: str,
        system: str | None,
        turns: Sequence[tuple[str, str]],
        choices: list[str] | None,
        gold: list[str] | None,
    ) -> None:
        """``add`` of a record given as its parts (``Renderer.render_many``'s loop builds no
        ``Rendered`` for the records it makes itself)."""
        spec = self._spec
        roles, contents = self._roles, self._contents
        if system:
            roles.append("system")
            contents.append(system)
        for user, assistant in turns:
            roles += ("user", "assistant")
            contents += (user, assistant)
        self._offsets.append(len(roles))
        self.template_id.append(template_id)
        self.variant.append(variant)
        self.answer_choices.append(choices)
        self.gold_answers.append(gold)
        self.example_id.append(example.example_id)
        self.split.append(example.split)
        self.language.append(example.language or spec.default_language)
        self.license.append(example.license or spec.license)
        self.out_split.append(example.out_split)

    def table(self) -> pa.Table:
        n = len(self.variant)
        spec = self._spec
        # Ids in one pass at the end: the same hash as ``render.record_id`` for each record.
        ids = self._ids.ids(
            zip(self.split, self.example_id, self.template_id, self.variant, strict=True)
        )
        messages = pa.ListArray.from_arrays(
            pa.array(self._offsets, pa.int32()),
            pa.StructArray.from_arrays(
                [pa.array(self._roles, pa.string()), pa.array(self._contents, pa.string())],
                fields=list(MESSAGE_TYPE),
            ),
        )
        columns: dict[str, Any] = {
            "id": pa.array(ids, pa.string()),
            "messages": messages,
            "source": _constant(spec.name, n),
            "task": _constant(spec.task, n),
            "cluster": _constant(spec.cluster, n),
            "template_id": pa.array(self.template_id, pa.string()),
            "variant": pa.array(self.variant, pa.string()),
            "answer_choices": pa.array(self.answer_choices, pa.list_(pa.string())),
            "gold_answers": pa.array(self.gold_answers, pa.list_(pa.string())),
            "example_id": pa.array(self.example_id, pa.string()),
            "split": pa.array(self.split, pa.string()),
            "language": pa.array(self.language, pa.string()),
            "license": pa.array(self.license, pa.string()),
            "out_split": pa.array(self.out_split, pa.string()),
        }
        return pa.Table.from_arrays(
            [columns[name] for name in PART_SCHEMA.names], schema=PART_SCHEMA
        )


def _constant(value: str, n: int) -> pa.Array:
    # A plain (not dictionary) string column, as from_pylist makes it (the part's bytes are
    # the same either way), repeated in Arrow rather than built from a list of n references.
    return pa.repeat(pa.scalar(value, pa.string()), n)
