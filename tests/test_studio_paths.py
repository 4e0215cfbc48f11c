"""What the studio reads and writes on disk: Save puts one template's block into a file of the
--templates folder (a new file, a replaced block or an appended one) atomically, keeping every
other byte, comments included, and the file's mode; a file changed since it was loaded is a
409, never overwritten; and a studio pointed at a folder neither reads nor writes outside it
(``..``, absolute paths, links that lead out, linked folders, the installed package).

These tests make no preview, so their studios never start a preview worker.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from pipeline.catalog import builtin_root, load_catalog
from pipeline.errors import CatalogError
from pipeline.studio import create_app
from pipeline.studio.splice import SpliceError, block_text, put_block, template_blocks

BASE = "http://127.0.0.1:8765"

CLAIM = """\
id: claim-check
instruction: 'Is "{{ hypothesis }}" true when "{{ premise }}"?'
output: "{{ answer_choices[label] }}"
answer_choices: ["yes", "maybe", "no"]
"""

# A user's file, commented throughout: Save must leave all of it but one block as it is.
COMMENTED = """\
# My own phrasings for mini_nli.   (two spaces kept)
source: mini_nli  # the source
templates:
  # --- the first one ---
  - id: does-it-follow
    # asks directly
    instruction: "Does \\"{{ hypothesis }}\\" follow from \\"{{ premise }}\\"?"
    output: "{{ answer_choices[label] }}"   # the label
    answer_choices: ["yes", "maybe", "no"]

  # --- between the two ---

  - id: write-claim
    inverted: true
    instruction: |-
      Write a claim that is {{ names.label }} given:

      {{ premise }}
    output: "{{ hypothesis }}"
# the end
"""


def studio(sources: Path, templates: Path | None) -> TestClient:
    dirs = [templates] if templates is not None else []
    return TestClient(create_app([sources], dirs), base_url=BASE)


def save(client: TestClient, text: str, file: Any, etag: str | None = None) -> Any:
    return client.post(
        "/api/save", json={"source": "mini_nli", "yaml": text, "file": file, "etag": etag}
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes() if p.is_file() and not p.is_symlink() else b"<link or dir>"
        for folder in folders
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty --templates folder of the user's own."""
    path = tmp_path / "my_templates"
    path.mkdir()
    return path


# --------------------------------------------------------------------------- saving


def test_save_creates_a_file_that_the_catalog_loads(user_catalog: Path, folder: Path) -> None:
    client = studio(user_catalog / "sources", folder)
    response = save(client, CLAIM, "mini_nli.yaml")
    assert response.status_code == 200, response.text
    path = folder / "mini_nli.yaml"
    assert response.json() == {"path": str(path.resolve()), "etag": sha(path)}
    assert path.read_text() == "source: mini_nli\ntemplates:\n" + "".join(
        ("  - " if i == 0 else "    ") + line + "\n" for i, line in enumerate(CLAIM.splitlines())
    )
    catalog = load_catalog([user_catalog / "sources"], [folder])
    (saved,) = catalog.templates_for("mini_nli")
    assert saved.id == "claim-check" and saved.path == path
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in folder.iterdir()) == ["mini_nli.yaml"]  # no temp file left
    # The studio reads it back from where it wrote it.
    loaded = client.get("/api/templates/mini_nli/claim-check").json()
    assert loaded["yaml"] == CLAIM and loaded["file"] == "mini_nli.yaml"
    assert loaded["origin"] == "user" and loaded["etag"] == sha(path)


def test_save_replaces_one_block_and_keeps_every_other_byte(
    user_catalog: Path, folder: Path
) -> None:
    path = folder / "mini_nli.yaml"
    path.write_text(COMMENTED)
    path.chmod(0o640)
    client = studio(user_catalog / "sources", folder)
    loaded = client.get("/api/templates/mini_nli/does-it-follow").json()
    assert loaded["yaml"].startswith("id: does-it-follow\n# asks directly\n")
    edited = loaded["yaml"].replace("Does", "Can we say that")
    response = save(client, edited, "mini_nli.yaml", loaded["etag"])
    assert response.status_code == 200, response.text
    expected = COMMENTED.replace("Does \\", "Can we say that \\")
    assert path.read_text() == expected  # only the edited line differs
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert response.json()["etag"] == sha(path)
    specs = {
        t.id: t.spec
        for t in load_catalog([user_catalog / "sources"], [folder]).templates_for("mini_nli")
    }
    assert specs["does-it-follow"].instruction is not None
    assert specs["does-it-follow"].instruction.startswith("Can we say that")
    assert specs["write-claim"].instruction == (
        "Write a claim that is {{ names.label }} given:\n\n{{ premise }}"
    )


def test_save_appends_a_new_id_after_the_last_template(user_catalog: Path, folder: Path) -> None:
    path = folder / "mini_nli.yaml"
    path.write_text(COMMENTED)
    client = studio(user_catalog / "sources", folder)
    response = save(client, CLAIM, "mini_nli.yaml", sha(path))
    assert response.status_code == 200, response.text
    head, tail = COMMENTED.rsplit("# the end\n", 1)
    added = "".join(
        ("  - " if i == 0 else "    ") + line + "\n" for i, line in enumerate(CLAIM.splitlines())
    )
    assert path.read_text() == head + added + "# the end\n" + tail
    ids = [
        t.id for t in load_catalog([user_catalog / "sources"], [folder]).templates_for("mini_nli")
    ]
    assert ids == ["does-it-follow", "write-claim", "claim-check"]


def test_a_file_changed_on_disk_is_a_conflict_and_stays_as_it_is(
    user_catalog: Path, folder: Path
) -> None:
    path = folder / "mini_nli.yaml"
    path.write_text(COMMENTED)
    client = studio(user_catalog / "sources", folder)
    loaded = client.get("/api/templates/mini_nli/does-it-follow").json()
    # Another editor saves the file meanwhile.
    changed = COMMENTED.replace("# the end", "# edited elsewhere")
    path.write_text(changed)
    response = save(client, loaded["yaml"].replace("Does", "Do"), "mini_nli.yaml", loaded["etag"])
    assert response.status_code == 409
    assert "changed on disk since you loaded it" in response.json()["error"]
    assert path.read_text() == changed
    # Without an etag, the editor never loaded the file: an id already in it is not replaced.
    response = save(client, loaded["yaml"], "mini_nli.yaml", None)
    assert response.status_code == 409 and "already has a template" in response.json()["error"]
    # With an etag, a file that has gone is not recreated.
    path.unlink()
    response = save(client, loaded["yaml"], "mini_nli.yaml", loaded["etag"])
    assert response.status_code == 409 and not path.exists()


def test_an_id_taken_in_another_file_is_refused(user_catalog: Path, folder: Path) -> None:
    # Saved beside the user's own mini_nli.yaml, the catalog would define the id twice.
    client = studio(user_catalog / "sources", user_catalog / "templates")
    text = client.get("/api/templates/mini_nli/does-it-follow").json()["yaml"]
    response = save(client, text, "other.yaml")
    assert response.status_code == 400 and "already defined in" in response.json()["error"]
    assert not (user_catalog / "templates" / "other.yaml").exists()
    # A built-in template copied into the user's folder must get an id of its own.
    client = TestClient(create_app((), [folder]), base_url=BASE)
    shipped = client.get("/api/templates/poem_sentiment/verse-options").json()
    response = client.post(
        "/api/save",
        json={"source": "poem_sentiment", "yaml": shipped["yaml"], "file": "p.yaml", "etag": None},
    )
    assert response.status_code == 400 and "new id" in response.json()["error"]
    assert list(folder.iterdir()) == []


def test_save_refuses_a_bad_template_with_the_preview_message(
    user_catalog: Path, folder: Path
) -> None:
    client = studio(user_catalog / "sources", folder)
    response = save(client, "id: x\ninstructoin: hi\noutput: a\n", "mini_nli.yaml")
    assert response.status_code == 400
    assert response.json()["error"].startswith("line 2: instructoin: unknown key")
    other = folder / "nli.yaml"
    other.write_text(
        "source: poem_sentiment\ntemplates:\n  - id: a\n    instruction: x\n    output: y\n"
    )
    response = save(client, CLAIM, "nli.yaml", sha(other))
    assert response.status_code == 400 and "source 'poem_sentiment'" in response.json()["error"]
    assert sorted(p.name for p in folder.iterdir()) == ["nli.yaml"]


def test_without_a_templates_folder_save_is_refused(user_catalog: Path) -> None:
    client = studio(user_catalog / "sources", None)
    response = save(client, CLAIM, "mini_nli.yaml")
    assert response.status_code == 403 and "--templates" in response.json()["error"]


# --------------------------------------------------------------------------- path safety


@pytest.mark.parametrize(
    "name",
    [
        "../mini_nli.yaml",
        "../../escape.yaml",
        "/etc/escape.yaml",
        "/tmp/escape.yaml",
        "sub/mini_nli.yaml",
        "..\\escape.yaml",
        "%2e%2e/escape.yaml",
        ".hidden.yaml",
        "notes.txt",
        "mini_nli.yaml.bak",
        "",
        None,
        42,
    ],
)
def test_save_only_writes_plain_yaml_names_inside_the_folder(
    user_catalog: Path, folder: Path, name: Any
) -> None:
    (folder / "sub").mkdir()
    before = snapshot(folder.parent)
    response = save(studio(user_catalog / "sources", folder), CLAIM, name)
    assert response.status_code == 403, response.text
    assert snapshot(folder.parent) == before
    assert not Path("/tmp/escape.yaml").exists() and not Path("/etc/escape.yaml").exists()


def test_a_link_out_of_the_folder_is_neither_read_nor_written(
    user_catalog: Path, folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "mini_nli.yaml"
    secret.write_text(
        "source: mini_nli\ntemplates:\n  - id: private\n    instruction: secret\n    output: x\n"
    )
    (folder / "linked.yaml").symlink_to(secret)
    (folder / "out").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    client = studio(user_catalog / "sources", folder)
    # The catalog reads the link as run would; the studio will not show the file it leads to.
    response = client.get("/api/templates/mini_nli/private")
    assert response.status_code == 403 and "outside" in response.json()["error"]
    for name in ("linked.yaml", "out/mini_nli.yaml", "out/new.yaml"):
        response = save(client, CLAIM, name, sha(secret))
        assert response.status_code == 403, name
    assert snapshot(outside) == before
    assert (folder / "linked.yaml").is_symlink()


def test_a_second_studio_cannot_reach_the_first_ones_folder(
    user_catalog: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    mine = first / "mini_nli.yaml"
    mine.write_text(COMMENTED)
    before = snapshot(first)
    client = studio(user_catalog / "sources", second)
    # Not in this studio's catalog: there is no way to name it.
    assert client.get("/api/templates/mini_nli/does-it-follow").status_code == 404
    for name in ("../first/mini_nli.yaml", str(mine), str(first / "new.yaml")):
        assert save(client, CLAIM, name, sha(mine)).status_code == 403
    assert snapshot(first) == before


def test_a_linked_templates_folder_is_trusted_as_named(user_catalog: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    client = studio(user_catalog / "sources", link)
    assert client.get("/api/sources").json()["templates_dir"] == str(real)
    response = save(client, CLAIM, "mini_nli.yaml")
    assert response.status_code == 200 and (real / "mini_nli.yaml").is_file()


def test_the_installed_package_is_never_a_save_folder(user_catalog: Path) -> None:
    package = Path(__file__).resolve().parent.parent / "pipeline"
    for place in (builtin_root() / "templates", package, package / "studio" / "static"):
        with pytest.raises(CatalogError, match="give a folder of your own"):
            create_app((), [place])
    # Nor is a --sources folder.
    with pytest.raises(CatalogError, match="a sources folder"):
        create_app([user_catalog / "sources"], [user_catalog / "sources"])


def test_a_source_file_linked_from_outside_is_shown_as_loaded_not_read(
    user_catalog: Path, tmp_path: Path
) -> None:
    sources = tmp_path / "linked_sources"
    sources.mkdir()
    outside = user_catalog / "sources" / "mini_nli.yaml"
    (sources / "mini_nli.yaml").symlink_to(outside)
    (sources.parent / "data").symlink_to(user_catalog / "data", target_is_directory=True)
    client = TestClient(create_app([sources], []), base_url=BASE)
    body = client.get("/api/sources/mini_nli").json()
    assert body["spec_yaml"] != outside.read_text()
    assert yaml.safe_load(body["spec_yaml"])["name"] == "mini_nli"


# --------------------------------------------------------------------------- splicing


def test_shipped_blocks_read_and_write_back_unchanged() -> None:
    files = sorted((builtin_root() / "templates").glob("*.yaml"))
    assert len(files) >= 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        ids = [t["id"] for t in yaml.safe_load(text)["templates"]]
        blocks = template_blocks(text)
        assert [b.template_id for b in blocks] == ids
        # The first, the last and the longest block of each file (each put_block parses the
        # whole file again with the pure-Python loader: every block of every file is slow).
        longest = max(blocks, key=lambda b: b.end - b.start).template_id
        for template_id in dict.fromkeys([ids[0], ids[-1], longest]):
            assert template_id is not None
            block = block_text(text, template_id)
            assert block is not None
            assert put_block(text, template_id, block) == text, (path.name, template_id)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Dash at column 0.
        (
            "source: s\ntemplates:\n- id: a\n  output: x\n- id: b\n  output: y\n",
            "source: s\ntemplates:\n- id: a\n  output: NEW\n- id: b\n  output: y\n",
        ),
        # Deeper and wider than the shipped files.
        (
            "source: s\ntemplates:\n    -   id: a\n        output: x\n# after\n",
            "source: s\ntemplates:\n    -   id: a\n        output: NEW\n# after\n",
        ),
        # CRLF line ends stay CRLF; the dash alone on its line becomes `- id:`.
        (
            "source: s\r\ntemplates:\r\n  -\r\n    id: a\r\n    output: x\r\n",
            "source: s\r\ntemplates:\r\n  - id: a\r\n    output: NEW\r\n",
        ),
    ],
)
def test_lists_indented_otherwise_are_edited_in_their_own_layout(text: str, expected: str) -> None:
    assert put_block(text, "a", "id: a\noutput: NEW\n") == expected
    assert yaml.safe_load(put_block(text, "c", "id: c\noutput: z\n"))["templates"][-1] == {
        "id": "c",
        "output": "z",
    }


def test_a_flow_style_file_is_refused_with_a_clear_message(
    user_catalog: Path, folder: Path
) -> None:
    flow = "source: mini_nli\ntemplates: [{id: a, instruction: hi, output: x}]\n"
    with pytest.raises(SpliceError, match="flow style"):
        put_block(flow, "a", CLAIM)
    path = folder / "mini_nli.yaml"
    path.write_text(flow)
    client = studio(user_catalog / "sources", folder)
    response = save(client, CLAIM, "mini_nli.yaml", sha(path))
    assert response.status_code == 400 and "block-style" in response.json()["error"]
    assert path.read_text() == flow
