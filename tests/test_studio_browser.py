"""The studio page, driven for real: the studio server on a free port of 127.0.0.1 and its page
in headless Chromium (the OS package, through Playwright; Playwright never downloads a browser
here). A template writer opens a source, types a template, watches the preview follow, sees a
misspelt field flagged, saves, and finds the template on disk; a file changed behind the
page's back is refused, not overwritten.

Without Chromium (or Playwright) these tests skip, saying why; with
INSTRUCTMIX_BROWSER_TESTS=required (CI sets it) they fail instead, so CI never passes by
skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline import load_catalog
from pipeline.studio import create_app

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
except ImportError:  # reported by the browser fixture, which skips or fails
    sync_playwright = None

# How Chromium is started: no sandbox (CI runs as root), and none of its background calls
# home, which a machine without a network refuses (slowly, many at a time).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The server renders every variant on two shared CPU cores: generous, since expect() returns
# as soon as the page shows what is asked.
WAIT_MS = 30_000

TEMPLATE = """\
id: claim-check
instruction: 'Is "{{ hypothesis }}" true when "{{ premise }}"?'
output: "{{ answer_choices[label] }}"
answer_choices: ["yes", "maybe", "no"]
"""


def _chromium() -> str | None:
    """The OS package's browser (Debian names it chromium, some others chromium-browser)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get("INSTRUCTMIX_BROWSER_TESTS") == "required":
        pytest.fail(f"INSTRUCTMIX_BROWSER_TESTS=required, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    executable = _chromium()
    if executable is None:
        _unavailable("no chromium on PATH (Debian: apt-get install -y chromium)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Studio:
    """The real studio app (``pipeline.studio.create_app``) served by uvicorn in a thread of
    this test process, on a free port of 127.0.0.1."""

    def __init__(self, sources: list[Path], templates: Path | None) -> None:
        import uvicorn

        self.sources = sources
        app = create_app(sources, [templates] if templates is not None else [])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the studio server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    # Offline by construction: every request the page makes goes to the studio itself (no
    # CDN, no web font), and every asset it asks for is there.
    elsewhere: list[str] = []
    missing: list[str] = []
    opened.on(
        "request",
        lambda r: None if urlsplit(r.url).hostname == "127.0.0.1" else elsewhere.append(r.url),
    )
    opened.on(
        "response",
        lambda r: missing.append(r.url) if r.status >= 400 and "/api/" not in r.url else None,
    )
    yield opened
    context.close()
    assert errors == [], f"the page raised: {errors}"
    assert elsewhere == [], f"the page reached outside the studio: {elsewhere}"
    assert missing == [], f"assets the studio did not serve: {missing}"


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my-templates"
    folder.mkdir()
    return folder


def open_studio(page: Page, studio: Studio, source: str) -> None:
    page.goto(studio.url)
    page.locator("#source-picker").select_option(source)
    expect(page.locator("#source-title")).to_have_text(source, timeout=WAIT_MS)


def new_template(page: Page) -> None:
    page.locator("#template-picker").select_option("__new__")
    expect(page.locator("#template-origin")).to_contain_text("new", timeout=WAIT_MS)


def replace_text(page: Page, text: str) -> None:
    """Select everything in the editor and put ``text`` there, as a paste would."""
    page.locator(".CodeMirror").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    # insert_text arrives as one input event, like a paste: no auto-indent of the lines.
    page.keyboard.insert_text(text)


def type_at(page: Page, line: int, column: int, text: str) -> None:
    """Type ``text`` key by key at a place in the editor (0-based line and column)."""
    page.evaluate(f"studio.editor.focus(); studio.editor.setCursor({{line: {line}, ch: {column}}})")
    page.keyboard.type(text)


def records(page: Page) -> Locator:
    return page.locator("#variant-body .record")


@pytest.fixture
def studio(user_catalog: Path, templates_dir: Path) -> Iterator[Studio]:
    running = Studio([user_catalog / "sources"], templates_dir)
    yield running
    running.stop()


USER_FILE = """\
# My own phrasings for mini_nli; the studio must keep this comment.
source: mini_nli
templates:
  - id: kept-comments
    instruction: 'Premise: {{ premise }} Does "{{ hypothesis }}" follow?'
    output: "{{ answer_choices[label] }}"
    answer_choices: ["yes", "maybe", "no"]
"""


@pytest.fixture
def studio_with_file(user_catalog: Path, templates_dir: Path) -> Iterator[Studio]:
    (templates_dir / "mini_nli.yaml").write_text(USER_FILE, encoding="utf-8")
    running = Studio([user_catalog / "sources"], templates_dir)
    yield running
    running.stop()


def screenshot(page: Page, tmp_path: Path) -> None:
    """The whole page as a PNG in tmp_path, and where STUDIO_SCREENSHOT says (to look at)."""
    png = page.screenshot(path=tmp_path / "studio.png", full_page=True)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    wanted = os.environ.get("STUDIO_SCREENSHOT")
    if wanted:
        Path(wanted).write_bytes(png)


def test_write_a_template_watch_the_preview_lint_and_save(
    studio: Studio, page: Page, templates_dir: Path, tmp_path: Path
) -> None:
    open_studio(page, studio, "mini_nli")
    # The source's page: its features with the label names, and its real sample rows.
    expect(page.locator("#features-table")).to_contain_text("contradiction")
    expect(page.locator("#rows-table")).to_contain_text("A dog runs in the park.")
    # Built-in sources are offered beside the user's own.
    assert page.locator("#source-picker option[value=esnli]").count() == 1

    new_template(page)
    replace_text(page, TEMPLATE)
    first = records(page).first
    expect(first).to_contain_text('Is "An animal is outside." true when', timeout=WAIT_MS)
    expect(first).to_contain_text("yes")

    # An edit shows in the records without any click: the preview follows the typing, one
    # request per pause rather than one per key.
    previews: list[str] = []
    page.on("request", lambda r: previews.append(r.url) if r.url.endswith("/preview") else None)
    type_at(page, 1, 14, "Honestly, ")  # inside the quote
    expect(first).to_contain_text('Honestly, Is "An animal is outside."', timeout=WAIT_MS)
    assert 1 <= len(previews) < len("Honestly, ")

    # Each form the template can take has its tab; one it cannot take says why.
    tabs = page.locator("#variant-tabs .tab")
    expect(tabs.filter(has_text="few-shot, options")).to_have_count(1)
    page.locator('#variant-tabs .tab[data-variant="inverted"]').click()
    expect(page.locator(".unavailable-note")).to_contain_text("not available")
    page.locator('#variant-tabs .tab[data-variant="zero_shot_noopt"]').click()

    # A misspelt field: lint names it, and every record is a reject saying so.
    replace_text(page, TEMPLATE.replace("{{ premise }}", "{{ premsie }}"))
    finding = page.locator('#lint-list .finding.error[data-rule="undeclared_field"]')
    expect(finding).to_contain_text("premsie", timeout=WAIT_MS)
    reject = page.locator("#variant-body .record.reject").first
    expect(reject).to_contain_text("premsie")
    expect(page.locator("#variant-tabs .tab.has-rejects").first).to_be_visible()

    # Broken YAML: the editor says where, and marks the line.
    replace_text(page, TEMPLATE.replace('output: "', 'output: ["'))
    expect(page.locator("#yaml-error")).to_contain_text("line", timeout=WAIT_MS)
    expect(page.locator(".CodeMirror .cm-error-line")).to_have_count(1)
    expect(page.locator(".CodeMirror .cm-error-note")).to_contain_text("line")

    replace_text(page, TEMPLATE)
    expect(page.locator("#yaml-error")).to_be_hidden(timeout=WAIT_MS)
    expect(page.locator("#lint-count")).to_have_text("clean", timeout=WAIT_MS)
    expect(page.locator("#stats")).to_contain_text("distinct prompts")
    assert page.locator("#stats .bar-row").count() == 3  # yes, maybe, no

    assert page.locator("#save-file").input_value() == "mini_nli.yaml"
    page.locator("#save-button").click()
    saved = templates_dir / "mini_nli.yaml"
    expect(page.locator("#save-message")).to_contain_text(f"Saved to {saved}", timeout=WAIT_MS)
    expect(page.locator("#dirty")).to_be_hidden()

    catalog = load_catalog(studio.sources, [templates_dir])
    (template,) = [t for t in catalog.templates_for("mini_nli") if t.id == "claim-check"]
    assert template.path == saved
    assert template.spec.instruction == 'Is "{{ hypothesis }}" true when "{{ premise }}"?'
    assert template.spec.answer_choices == ["yes", "maybe", "no"]
    # The saved template is now one of the user's own in the picker.
    expect(page.locator("#template-picker optgroup[label='Your templates'] option")).to_have_text(
        ["claim-check"]
    )
    expect(page.locator("#source-picker option[value=mini_nli]")).to_have_text(
        "mini_nli (1 template)"
    )

    screenshot(page, tmp_path)


def test_save_refuses_a_file_changed_on_disk_after_loading(
    studio_with_file: Studio, page: Page, templates_dir: Path
) -> None:
    target = templates_dir / "mini_nli.yaml"
    open_studio(page, studio_with_file, "mini_nli")
    page.locator("#template-picker").select_option(label="kept-comments")
    expect(page.locator("#template-origin")).to_contain_text("mini_nli.yaml", timeout=WAIT_MS)
    assert "{{ premise }}" in page.evaluate("studio.editor.getValue()")
    expect(records(page).first).to_contain_text("A dog runs in the park.", timeout=WAIT_MS)

    # Someone else edits the file after the page loaded it.
    changed = target.read_bytes() + b"# added by another editor\n"
    target.write_bytes(changed)

    type_at(page, 1, 14, "Please: ")
    page.locator("#save-button").click()
    message = page.locator("#save-message.conflict")
    expect(message).to_contain_text("changed on disk", timeout=WAIT_MS)
    assert target.read_bytes() == changed

    # Having read the file again, Save replaces only this template's block: the other
    # editor's line and the file's own comment stay.
    page.locator("#reread-button").click()
    expect(page.locator("#save-message")).to_contain_text("Read mini_nli.yaml again")
    page.locator("#save-button").click()
    expect(page.locator("#save-message.ok")).to_contain_text("Saved to", timeout=WAIT_MS)
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# My own phrasings for mini_nli; the studio must keep this comment.")
    assert text.endswith("# added by another editor\n")
    (template,) = load_catalog(studio_with_file.sources, [templates_dir]).templates_for("mini_nli")
    assert template.spec.instruction == (
        'Please: Premise: {{ premise }} Does "{{ hypothesis }}" follow?'
    )


def test_without_a_templates_folder_save_is_off_and_says_how_to_turn_it_on(
    user_catalog: Path, page: Page
) -> None:
    studio = Studio([user_catalog / "sources"], None)
    try:
        open_studio(page, studio, "mini_nli")
        expect(page.locator("#save-button")).to_be_disabled()
        expect(page.locator("#save-message")).to_be_visible()
        expect(page.locator("#save-message")).to_contain_text("--templates DIR")
        # Reading and previewing still work: the starter template renders the sample.
        expect(records(page).first).to_contain_text("A dog runs in the park.", timeout=WAIT_MS)
    finally:
        studio.stop()
