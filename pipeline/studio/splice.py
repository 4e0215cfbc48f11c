"""Put one template's YAML block into a template file's text, leaving every other byte as it was.

A template file is edited as text, not re-dumped: a YAML dump would drop the comments and
reflow every other template. The block of a template is found from the YAML node marks
(PyYAML's pure-Python composer, whose marks are character offsets into the text): it runs from
the line of its list dash to the end of the line that holds its last value. Comment lines above
a template's dash, or after its last value and before the next dash, are outside every block and
stay where they are.

Only block-style lists are edited (``templates:`` followed by ``- id: ...`` items, at whatever
indentation the file uses); a flow-style list (``templates: [{id: a, ...}]``) is refused, as the
studio cannot place a block in it without rewriting it.

The editor shows a block dedented to column 0 (``block_text``) and sends it back the same way;
``put_block(text, id, block_text(text, id))`` gives ``text`` back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml


class SpliceError(ValueError):
    """The file's text cannot be edited in place (not a template file, or a flow-style list)."""


@dataclass(frozen=True)
class Block:
    """Where one template sits in the file's text (offsets into it)."""

    template_id: str | None
    start: int  # start of the line of its dash
    content: int  # its first key (``id`` in ``- id: a``)
    end: int  # just past the newline ending its last value's line (or the end of the text)
    column: int  # the column of its keys

    def prefix(self, text: str) -> str:
        """What stands before its first key on the dash's line (``"  - "``)."""
        return text[self.start : self.content]


def template_blocks(text: str) -> list[Block]:
    """The blocks of the file's templates, in file order."""
    seq = _templates_node(text)
    return [_block(text, item, i) for i, item in enumerate(seq.value)]


def block_text(text: str, template_id: str) -> str | None:
    """The template's block as the editor shows it: dedented to column 0, ``\\n`` line ends,
    ending with one newline; None when the file has no template with that id."""
    for block in template_blocks(text):
        if block.template_id == template_id:
            raw = text[block.content : block.end].replace("\r\n", "\n")
            first, *rest = raw.split("\n")
            lines = [first] + [_dedent(line, block.column) for line in rest]
            out = "\n".join(lines)
            return out if out.endswith("\n") else out + "\n"
    return None


def put_block(text: str, template_id: str, new_block: str) -> str:
    """``text`` with the template ``template_id``'s block replaced by ``new_block`` (YAML of
    one mapping at column 0), or ``new_block`` appended as the last template when the file has
    no template of that id. Nothing outside that block changes."""
    blocks = template_blocks(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    for block in blocks:
        if block.template_id == template_id:
            prefix = block.prefix(text)
            if "\n" in prefix:  # the dash stands alone on its line: write `- id:` on one line
                prefix = _dash_prefix(block, text)
            placed = _indent(new_block, prefix, block.column, newline)
            return text[: block.start] + placed + text[block.end :]
    last = blocks[-1]
    prefix = last.prefix(text)
    if "\n" in prefix:
        prefix = _dash_prefix(last, text)
    placed = _indent(new_block, prefix, last.column, newline)
    head = text[: last.end]
    if not head.endswith("\n"):
        head += newline
    return head + placed + text[last.end :]


def new_file(source: str, new_block: str) -> str:
    """The text of a new template file holding one template."""
    return f"source: {source}\ntemplates:\n" + _indent(new_block, "  - ", 4, "\n")


# --------------------------------------------------------------------------- internals


def _templates_node(text: str) -> yaml.SequenceNode:
    try:
        # The pure-Python loader: its marks are offsets into this very string.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpliceError(f"{at}invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(root, yaml.MappingNode):
        raise SpliceError("not a template file: expected a mapping with `source:` and `templates:`")
    if root.flow_style:
        raise SpliceError(_FLOW)
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "templates":
            if not isinstance(value, yaml.SequenceNode):
                raise SpliceError(f"line {value.start_mark.line + 1}: `templates:` is not a list")
            if value.flow_style:
                raise SpliceError(f"line {value.start_mark.line + 1}: {_FLOW}")
            if not value.value:
                raise SpliceError(f"line {value.start_mark.line + 1}: `templates:` is empty")
            return value
    raise SpliceError("not a template file: it has no `templates:` list")


_FLOW = (
    "the templates list is written in flow style ([...] or {...}); the studio only edits "
    "block-style lists (`- id: ...` items): rewrite it in block style, or edit it by hand"
)


def _block(text: str, item: yaml.Node, index: int) -> Block:
    line = item.start_mark.line + 1
    if not isinstance(item, yaml.MappingNode):
        raise SpliceError(f"line {line}: template {index + 1} is not a mapping")
    template_id = None
    for key, value in item.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "id"
            and isinstance(value, yaml.ScalarNode)
        ):
            template_id = value.value
    content = item.start_mark.index
    column = item.start_mark.column
    dash = content - 1
    while dash >= 0 and text[dash] in " \t\r\n":
        dash -= 1
    if dash < 0 or text[dash] != "-":
        raise SpliceError(f"line {line}: cannot find the `-` in front of template {index + 1}")
    start = text.rfind("\n", 0, dash) + 1
    if text[start:dash].strip(" \t"):
        raise SpliceError(f"line {line}: template {index + 1} does not start its own line")
    last = _content_end(text, item)
    if last > 0 and text[last - 1] == "\n":
        end = last
    else:
        stop = text.find("\n", last)
        end = len(text) if stop < 0 else stop + 1
    return Block(template_id, start, content, end, column)


def _content_end(text: str, node: yaml.Node) -> int:
    """Offset just past the node's last character of content: a block collection's own end
    mark lies past the comments and blank lines that follow it, so descend to its last value."""
    if isinstance(node, yaml.ScalarNode):
        end = int(node.end_mark.index)
        if node.style in ("|", ">"):
            header_end = text.find("\n", node.start_mark.index)
            header = text[node.start_mark.index : header_end if header_end >= 0 else len(text)]
            if "+" not in header.split("#")[0]:
                # A clipped or stripped block scalar's trailing blank lines are not content.
                end = max(len(text[:end].rstrip(" \t\r\n")), node.start_mark.index + 1)
        return end
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if node.flow_style or not node.value:
            return int(node.end_mark.index)
        last = node.value[-1]
        if isinstance(node, yaml.MappingNode):
            key, value = last
            return max(_content_end(text, key), _content_end(text, value))
        return _content_end(text, last)
    return int(node.end_mark.index)


def _dash_prefix(block: Block, text: str) -> str:
    dash_line = text[block.start : block.content].split("\n")[0]
    dash_col = len(dash_line) - len(dash_line.lstrip(" "))
    gap = max(block.column - dash_col - 1, 1)
    return " " * dash_col + "-" + " " * gap


def _dedent(line: str, column: int) -> str:
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, column) :]


def _indent(new_block: str, prefix: str, column: int, newline: str) -> str:
    lines = new_block.replace("\r\n", "\n").rstrip("\n").split("\n")
    pad = " " * column
    out = [prefix + lines[0]] + [pad + line if line else "" for line in lines[1:]]
    return "".join(line + newline for line in out)
