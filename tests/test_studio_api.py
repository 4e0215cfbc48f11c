"""The studio's HTTP API, driven as its page drives it (Starlette's TestClient), on the bundled
sources: list and open sources, load a template or a starter, preview as you type (every form,
rejects with their rule, lint with the offending row, statistics), and the request checks that
keep other web pages from driving it. One test serves the studio for real with uvicorn on a free
port and talks to it over a socket.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from pipeline.catalog import Template, builtin_root
from pipeline.models import TemplateSpec
from pipeline.studio import create_app
from pipeline.studio.workspace import edited_catalog

BASE = "http://127.0.0.1:8765"
ROOT = builtin_root()
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """One studio over the built-in catalog for the module (its preview worker starts once)."""
    with TestClient(create_app(), base_url=BASE) as c:
        yield c


def preview(client: TestClient, source: str, text: str, n: int = 3) -> dict[str, Any]:
    response = client.post("/api/preview", json={"source": source, "yaml": text, "n": n})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def variant(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in body["variants"] if v["variant"] == name]
    assert found, [v["variant"] for v in body["variants"]]
    return found[0]


def user_prompt(record: dict[str, Any]) -> str:
    return "\n\n".join(m["content"] for m in record["messages"] if m["role"] == "user")


VERSE = """\
id: verse-mood
instruction: How does this line of poetry feel? Choose from {{ answer_choices | join(", ") }}.
input: "{{ verse_text }}"
output: "{{ answer_choices[label] }}"
answer_choices: ["negative", "positive", "no impact", "mixed"]
metadata:
  choices_in_prompt: true
"""


# --------------------------------------------------------------------------- reading


def test_sources_lists_the_catalog_it_was_given(client: TestClient) -> None:
    body = client.get("/api/sources").json()
    by_name = {s["name"]: s for s in body["sources"]}
    assert by_name["poem_sentiment"] == {
        "name": "poem_sentiment",
        "origin": "builtin",
        "path": str(ROOT / "sources" / "poem_sentiment.yaml"),
        "templates": len(
            yaml.safe_load((ROOT / "templates/poem_sentiment.yaml").read_text())["templates"]
        ),
    }
    # Started without --templates: nothing to save into, and the page is told so.
    assert body["writable"] is False and body["templates_dir"] is None


def test_user_folders_add_their_sources(user_catalog: Path) -> None:
    app = create_app([user_catalog / "sources"], [user_catalog / "templates"])
    body = TestClient(app, base_url=BASE).get("/api/sources").json()
    mine = next(s for s in body["sources"] if s["name"] == "mini_nli")
    assert mine["origin"] == "user" and mine["templates"] == 2
    assert body["writable"] is True
    assert body["templates_dir"] == str((user_catalog / "templates").resolve())


def test_source_details_show_spec_features_labels_and_rows(client: TestClient) -> None:
    body = client.get("/api/sources/poem_sentiment").json()
    spec_file = ROOT / "sources" / "poem_sentiment.yaml"
    assert body["spec_yaml"] == spec_file.read_text(encoding="utf-8")
    assert body["license"] == "CC BY 4.0"
    assert body["features"] == {
        "id": "int",
        "verse_text": "string",
        "label": "ClassLabel(negative, positive, no_impact, mixed)",
    }
    assert body["label_names"] == {"label": ["negative", "positive", "no_impact", "mixed"]}
    # The sample's first rows, as templates see them: raw label 1 is "positive" (index 1).
    assert len(body["rows"]) == 20
    assert body["rows"][0] == {
        "id": 0,
        "verse_text": "with pale blue berries. in these peaceful shades--",
        "label": 1,
    }
    ids = [t["id"] for t in body["templates"]]
    assert "verse-options" in ids
    assert {t["origin"] for t in body["templates"]} == {"builtin"}


def test_template_gives_its_own_block_and_the_file_etag(client: TestClient) -> None:
    body = client.get("/api/templates/poem_sentiment/verse-options").json()
    path = ROOT / "templates" / "poem_sentiment.yaml"
    assert body["etag"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert body["file"] == str(path) and body["origin"] == "builtin"
    assert body["yaml"].startswith("id: verse-options\ninstruction: What feeling")
    # The block is the template as the catalog reads it.
    shipped = next(
        t for t in yaml.safe_load(path.read_text())["templates"] if t["id"] == "verse-options"
    )
    assert yaml.safe_load(body["yaml"]) == shipped


def test_unknown_names_are_404_with_one_line(client: TestClient) -> None:
    for url in (
        "/api/sources/no_such_source",
        "/api/templates/poem_sentiment/no-such-template",
        "/api/new/no_such_source",
        "/api/nothing/here",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert set(response.json()) == {"error"} and "\n" not in response.json()["error"]


def test_starter_template_uses_the_source_fields_and_renders_clean(client: TestClient) -> None:
    body = client.get("/api/new/esnli").json()
    assert body["etag"] is None
    assert "{{ premise }}" in body["yaml"] and "{{ hypothesis }}" in body["yaml"]
    assert '["entailment", "neutral", "contradiction"]' in body["yaml"]
    result = preview(client, "esnli", body["yaml"])
    assert result["error"] is None
    assert [f for f in result["lint"] if f["severity"] == "error"] == []
    records = variant(result, "zero_shot_opt")["records"]
    assert len(records) == 3 and all("messages" in r for r in records)
    assert all(r["target"] in ("entailment", "neutral", "contradiction") for r in records)


# --------------------------------------------------------------------------- preview


def test_preview_follows_the_edited_text(client: TestClient) -> None:
    first = preview(client, "poem_sentiment", VERSE)
    edited = preview(client, "poem_sentiment", VERSE.replace("How does", "Tell me how"))
    assert first["template_id"] == "verse-mood" and first["error"] is None
    before = variant(first, "zero_shot_opt")["records"]
    after = variant(edited, "zero_shot_opt")["records"]
    assert [r["example_id"] for r in before] == [r["example_id"] for r in after]
    assert all(user_prompt(r).startswith("How does this line") for r in before)
    assert all(user_prompt(r).startswith("Tell me how this line") for r in after)
    # The same example and answer either way: only the wording moved.
    assert [r["target"] for r in before] == [r["target"] for r in after]
    assert before[0]["target"] == "positive"  # example 0's raw label 1


def test_preview_shows_every_form_and_each_option_style(client: TestClient) -> None:
    text = client.get("/api/templates/esnli/premise-hypothesis-options").json()["yaml"]
    body = preview(client, "esnli", text, n=2)
    names = [v["variant"] for v in body["variants"]]
    assert names[:2] == ["zero_shot_opt", "zero_shot_opt:dashes"]
    for name in ("zero_shot_noopt", "few_shot_opt", "few_shot_noopt", "cot", "inverted"):
        assert name in names
    letters = variant(body, "zero_shot_opt:letters")
    assert letters["style"] == "letters"
    for record in letters["records"]:
        assert "(A)" in user_prompt(record) and record["variant"] == "zero_shot_opt"
    numbers = variant(body, "zero_shot_opt:numbers")["records"]
    assert all("1." in user_prompt(r) for r in numbers)
    # Few-shot prompts hold exemplars: longer than the zero-shot prompt of the same example.
    zero = {r["example_id"]: r for r in variant(body, "zero_shot_noopt")["records"]}
    for record in variant(body, "few_shot_noopt")["records"]:
        assert len(user_prompt(record)) > len(user_prompt(zero[record["example_id"]]))
    cot = variant(body, "cot")
    assert cot["available"] and all("So the answer is" in r["target"] for r in cot["records"])
    inverted = variant(body, "inverted")
    assert inverted["available"] is False and "not inverted" in inverted["reason"]
    assert inverted["records"] == []


def test_a_form_run_never_makes_is_listed_with_the_reason(client: TestClient) -> None:
    body = preview(client, "poem_sentiment", VERSE)
    hidden = variant(body, "zero_shot_noopt")
    # choices_in_prompt: every record shows the choices, so no record is 'noopt'.
    assert hidden["available"] is False and "choices" in hidden["reason"]
    assert variant(body, "cot")["reason"].endswith("it never makes chain-of-thought records")


def test_a_misspelt_field_is_a_lint_error_with_its_row_and_a_reject(client: TestClient) -> None:
    body = preview(client, "poem_sentiment", VERSE.replace("verse_text", "verse_txt"))
    assert body["error"] is None
    undeclared = next(f for f in body["lint"] if f["rule"] == "undeclared_field")
    assert undeclared["severity"] == "error" and "verse_txt" in undeclared["message"]
    assert undeclared["row"] is not None and "verse_text" in undeclared["row"]
    for record in variant(body, "zero_shot_opt")["records"]:
        assert record["rule"] == "undefined" and "'verse_txt' is undefined" in record["error"]
    assert body["stats"]["records"] == 0 and body["stats"]["rejects"] == body["stats"]["rows"]


def test_a_template_that_fails_to_render_is_a_reject_not_a_crash(client: TestClient) -> None:
    broken = VERSE.replace('"{{ verse_text }}"', '"{{ verse_text }} {{ 1 // 0 }}"')
    record = variant(preview(client, "poem_sentiment", broken), "zero_shot_opt")["records"][0]
    assert record["rule"] and "ZeroDivisionError" in record["error"]
    unclosed = VERSE.replace('"{{ verse_text }}"', '"{{ verse_text "')
    body = preview(client, "poem_sentiment", unclosed)
    assert body["error"] is None  # valid YAML and a valid template spec: Jinja is render's
    records = variant(body, "zero_shot_opt")["records"]
    assert {r["rule"] for r in records} == {"template_syntax"}
    assert any(f["rule"] == "template_syntax" for f in body["lint"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: x\ninstruction: [\n", "line 3: invalid YAML"),
        ("id: x\ninstructoin: Hello\noutput: a\n", "line 2: instructoin: unknown key"),
        ("id: x\ninstruction: Hello\noutput: a\ninstruction: Again\n", "line 4: "),
        ("id: Not A Slug\ninstruction: Hello\noutput: a\n", "line 1: id: "),
        ("- id: x\n  instruction: Hello\n", "line 1: a template is one mapping"),
        ("", "line 1: the text is empty"),
    ],
)
def test_a_bad_text_gives_its_line_never_a_500(client: TestClient, text: str, message: str) -> None:
    body = preview(client, "poem_sentiment", text)
    assert body["error"].startswith(message), body["error"]
    assert body["variants"] == [] and body["template_id"] is None


def test_preview_requests_are_checked(client: TestClient) -> None:
    for payload in (
        {"source": "poem_sentiment", "yaml": VERSE, "n": 0},
        {"source": "poem_sentiment", "yaml": VERSE, "n": 21},
        {"source": "poem_sentiment", "yaml": VERSE, "n": "3"},
        {"source": "poem_sentiment", "yaml": VERSE, "seed": 2**64},
        {"source": "poem_sentiment", "yaml": VERSE, "seed": -1},
        {"source": "poem_sentiment"},
    ):
        response = client.post("/api/preview", json=payload)
        assert response.status_code == 400, payload
    response = client.post("/api/preview", json={"source": "nope", "yaml": VERSE})
    assert response.status_code == 404 and "nope" in response.json()["error"]
    response = client.post("/api/preview", content=b"{not json", headers=JSON)
    assert response.status_code == 400 and "not JSON" in response.json()["error"]


def test_the_edited_template_takes_the_place_of_its_id(builtin_catalog: Any) -> None:
    shipped = builtin_catalog.templates_for("poem_sentiment")
    edited = TemplateSpec.model_validate(yaml.safe_load(VERSE) | {"id": shipped[0].id})
    catalog = edited_catalog(builtin_catalog, Template(edited, "poem_sentiment", Path("x")))
    ids = [t.id for t in catalog.templates_for("poem_sentiment")]
    assert ids == [t.id for t in shipped]
    assert catalog.templates_for("poem_sentiment")[0].spec == edited
    new = Template(TemplateSpec.model_validate(yaml.safe_load(VERSE)), "poem_sentiment", Path("x"))
    assert [t.id for t in edited_catalog(builtin_catalog, new).templates_for("poem_sentiment")] == [
        *ids,
        "verse-mood",
    ]
    assert builtin_catalog.templates_for("poem_sentiment") == shipped  # a copy, not a change


# --------------------------------------------------------------------------- statistics


def test_stats_agree_with_a_count_of_the_sample_file(client: TestClient) -> None:
    body = preview(client, "poem_sentiment", VERSE)
    stats = body["stats"]
    with open(ROOT / "data" / "poem_sentiment.train.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[: stats["rows"]]
    assert stats["rows"] == 200 == len(rows)
    raw_to_answer = {"-1": "negative", "0": "no impact", "1": "positive", "2": "mixed"}
    expected = Counter(raw_to_answer[r[2]] for r in rows)
    assert stats["answers"] == [[a, c] for a, c in expected.most_common()]
    assert stats["records"] == 200 and stats["rejects"] == 0
    # One fixed instruction: prompts differ exactly where the verses do.
    assert stats["distinct_prompts"] == len({r[1] for r in rows})
    out = stats["output_lengths"]
    assert len(out["counts"]) == 10 and sum(out["counts"]) == 200
    assert out["edges"][0] == len("mixed") and out["edges"][-1] == len("no impact")
    # The 127 "no impact" answers fall in the last bin, the 6 "mixed" ones in the first.
    assert out["counts"][-1] == expected["no impact"] and out["counts"][0] == expected["mixed"]
    assert sum(body["stats"]["prompt_lengths"]["counts"]) == 200


def test_a_constant_template_shows_as_one_distinct_prompt(client: TestClient) -> None:
    constant = VERSE.replace('input: "{{ verse_text }}"\n', "")
    stats = preview(client, "poem_sentiment", constant)["stats"]
    assert stats["distinct_prompts"] == 1 and stats["records"] == 200


# --------------------------------------------------------------------------- request checks


def test_a_cross_origin_post_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "poem_sentiment.yaml").write_text(
        "source: poem_sentiment\ntemplates:\n  - id: mine\n    instruction: Hi\n    output: a\n"
    )
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    c = TestClient(create_app((), [folder]), base_url=BASE)
    save = {"source": "poem_sentiment", "yaml": VERSE, "file": "new.yaml", "etag": None}
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null"):
        for url, payload in (("/api/save", save), ("/api/preview", save)):
            response = c.post(url, json=payload, headers={"Origin": origin})
            assert response.status_code == 403, (url, origin)
            assert "refused" in response.json()["error"]
    # A form post (no JSON content type) is refused even from the studio's own origin.
    response = c.post("/api/save", content=json.dumps(save), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # The studio's own page (same origin) may save.
    ok = c.post("/api/save", json=save, headers={"Origin": BASE})
    assert ok.status_code == 200 and (folder / "new.yaml").exists()


def test_a_foreign_host_or_origin_is_refused_even_for_reads(client: TestClient) -> None:
    for headers in (
        {"Host": "evil.example:8765"},  # DNS rebinding: a page of evil.example on our port
        {"Host": "127.0.0.1:9999"},
        {"Origin": "http://evil.example"},
    ):
        for url in ("/api/sources", "/api/sources/poem_sentiment", "/"):
            response = client.get(url, headers=headers)
            assert response.status_code == 403, (url, headers)
    for host in ("localhost:8765", "[::1]:8765", "127.0.0.1:8765"):
        assert client.get("/api/sources", headers={"Host": host}).status_code == 200


def test_no_response_carries_cors_headers(client: TestClient) -> None:
    responses = [
        client.get("/api/sources", headers={"Origin": BASE}),
        client.options(
            "/api/save",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        ),
        client.options("/api/preview", headers={"Origin": BASE}),
        client.post("/api/preview", json={}, headers={"Origin": "http://evil.example"}),
    ]
    for response in responses:
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        assert response.headers["x-frame-options"] == "DENY"
    assert responses[1].status_code in (403, 405)


def test_the_page_and_its_assets_come_from_static_only(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    static = Path(__file__).resolve().parent.parent / "pipeline" / "studio" / "static"
    assert page.content == (static / "index.html").read_bytes()
    assert client.get("/static/app.js").content == (static / "app.js").read_bytes()
    for url in ("/static/", "/static/nope.js", "/static/.hidden", "/static/%2e%2e/server.py"):
        assert client.get(url).status_code == 404, url


# --------------------------------------------------------------------------- served for real


def raw_get(port: int, target: str, host: str | None = None) -> tuple[int, bytes]:
    """A GET over a plain socket, the request line sent as written (no client-side cleanup of
    ``..`` or percent escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_serve_prints_its_real_address_and_answers_over_a_socket() -> None:
    code = "from pipeline.studio import serve; serve([], [], 0)"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("instructmix studio: http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
        assert port != 0
        status, page = raw_get(port, "/")
        assert status == 200 and b"<html" in page.lower()
        status, data = raw_get(port, "/api/sources")
        assert status == 200
        assert "poem_sentiment" in {s["name"] for s in json.loads(data)["sources"]}
        assert raw_get(port, "/api/sources", host=f"attacker.example:{port}")[0] == 403
        for target in (
            "/static/../server.py",
            "/static/%2e%2e/server.py",
            "/static/..%2fserver.py",
            "/static/%2e%2e%2f%2e%2e%2fcatalog.py",
            "/static/vendor/../../server.py",
        ):
            status, data = raw_get(port, target)
            assert status in (400, 404), target
            assert b"def create_app" not in data and b"import" not in data
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_template_past_the_time_limit_is_a_reject_and_the_studio_goes_on(
    client: TestClient,
) -> None:
    # 10**10 loop steps: far past the sandbox's 2 s per record, in the worker's main thread.
    slow = VERSE.replace(
        'input: "{{ verse_text }}"',
        'input: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}'
        '{% endfor %}{{ verse_text }}"',
    )
    body = preview(client, "poem_sentiment", slow)
    records = variant(body, "zero_shot_opt")["records"]
    assert {r["rule"] for r in records} == {"render_timeout"}
    assert "render took longer than" in records[0]["error"]
    assert [f["rule"] for f in body["lint"]] == ["render_timeout"]
    assert body["lint"][0]["row"]["verse_text"]
    assert body["stats"] is None
    # The next keystroke previews as usual.
    assert preview(client, "poem_sentiment", VERSE)["stats"]["records"] == 200
