"""ComfyUI's graph editor in headless Chromium (Debian's package, driven by Playwright): what a user clicks.

Everything that differs between editor versions (the comfyui-frontend-package a host ships) is one
`EditorUI` entry in `EDITORS`: a later editor whose page differs is one more entry. The entry used is
the newest one not newer than the installed editor (`installed_version()`). State is read through the
editor's own JavaScript API (`window.app`, LiteGraph), which both editors share; what a user does
(open the template browser, search, press Run, drop a file) is done with real clicks and keys.

Console messages are kept per page so tests can tell the pack's errors from the editor's own.
Connections the editor makes to comfy.org or Hugging Face (node registry, model checks; blocked by the
editor's own content security policy on an offline machine) are its own, whatever is installed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hostenv
from host_server import ComfyServer
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from workflow_ui import USER_FILE_INPUTS

PACK_FOLDER = "comfyui_layer_sketch"  # the pack's folder name in custom_nodes: the template browser's label
OFFLINE_NOISE = re.compile(r"api\.comfy\.org|huggingface\.co|Content Security Policy")
ARTIFACTS = hostenv.REPO / ".test-artifacts" / "editor"
# Inputs of the pack's workflows that name the user's own model files, not choices (their example pictures are
# in the input folder and must be found).
MODEL_INPUTS = sorted(USER_FILE_INPUTS - {"image"})
PACK_CATEGORIES = {"layer_diffuse", "sketch_guidance"}
PACK_WORKFLOWS = sorted(path.stem for path in (hostenv.REPO / "workflows").glob("*.json"))


SCRIPTS = Path(__file__).resolve().parent / "editor_js"


@functools.cache
def script(name: str) -> str:
    """The JavaScript function in editor_js/<name>.js, for the page's evaluate / wait_for_function."""
    return (SCRIPTS / f"{name}.js").read_text()


@dataclass(frozen=True)
class EditorUI:
    """How one editor version shows what the tests use (CSS selectors unless said otherwise)."""

    version: str
    dialog: str  # an open dialog: the template browser, the node search, an error dialog
    templates_button: str  # the side bar button that opens the template browser
    search_placeholder: str  # the node search box's text field (its placeholder text)
    search_result: str  # one result row in the open node search
    run_button: str
    # The editor's stores (pinia ids) of what is wrong with the open graph: missing node types, model
    # files, pictures, the last run's errors; the data behind 1.47's error notice and errors panel. None
    # in 1.32, which opens a dialog for missing nodes and says nothing about models or pictures.
    problem_stores: tuple[str, ...]
    vue_nodes_setting: str  # the setting that turns on the Vue (DOM) node view, "Nodes 2.0"
    vue_node: str  # one node in the Vue node view; {id} is the node's id


EDITORS: tuple[EditorUI, ...] = (  # newest first
    EditorUI(version="1.47.12", dialog="[role=dialog]", templates_button="button.templates-tab-button",
             search_placeholder="Add a node...", search_result="[role=dialog] [role=option]",
             run_button="button[data-testid=queue-button]",
             problem_stores=("missingModel", "missingNodesError", "missingMedia", "executionError"),
             vue_nodes_setting="Comfy.VueNodes.Enabled", vue_node=".lg-node[data-node-id='{id}']"),
    EditorUI(version="1.32.9", dialog=".p-dialog", templates_button="button.templates-tab-button",
             search_placeholder="Search Nodes...", search_result=".p-dialog [role=option]",
             run_button="[data-testid=queue-button] button.p-splitbutton-button", problem_stores=(),
             vue_nodes_setting="Comfy.VueNodes.Enabled", vue_node=".lg-node[data-node-id='{id}']"),
)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def installed_version() -> str:
    """The editor the selected host serves: the installed comfyui-frontend-package (the host's pin when
    this Python does not have it)."""
    try:
        return importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        return hostenv.selected_host().frontend


def editor_ui(version: str | None = None) -> EditorUI:
    """The entry for `version` (default: the installed editor): the newest not newer than it."""
    version = version or installed_version()
    for ui in EDITORS:
        if _version_key(ui.version) <= _version_key(version):
            return ui
    raise LookupError(f"no EditorUI entry for editor {version} (oldest known: {EDITORS[-1].version})")


def artifacts_dir(version: str | None = None) -> Path:
    """.test-artifacts/editor/<editor version>/, made when missing."""
    path = ARTIFACTS / (version or installed_version())
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Editor:
    page: Page
    ui: EditorUI
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions, in order
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # addresses the server answered 404 for
    opened_with: int = 0  # errors logged while the editor started
    in_flight: set = field(default_factory=set)  # requests not answered yet
    since: int = 0  # errors logged before the current test (`fresh_start`)

    def new_errors(self, since: int | None = None) -> list[str]:
        """Errors after the first `since` (default: after start-up), addresses made neutral, the editor's
        offline noise left out."""
        since = self.opened_with if since is None else since
        found = [re.sub(r"127\.0\.0\.1:\d+", "HOST", e) for e in self.errors[since:]]
        return [e for e in found if not OFFLINE_NOISE.search(e)]

    def fresh_start(self) -> Editor:
        """Start of a test on a page that earlier tests used: dialogs closed, 404s forgotten, `since` set to
        the number of errors so far (for `new_errors(self.since)`)."""
        close_dialogs(self)
        self.missing.clear()
        self.since = len(self.errors)
        return self

    def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    if not hostenv.CHROMIUM.exists():
        raise FileNotFoundError(f"{hostenv.CHROMIUM} is missing: install Debian's chromium package "
                                "(python3 run.py --test does it when run as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(hostenv.CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_editor(browser: Browser, url: str, width: int = 1400, height: int = 900) -> Editor:
    """The editor as a returning user sees it: the default graph, no first-run template browser."""
    request = urllib.request.Request(f"{url}/api/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
    urllib.request.urlopen(request, timeout=30).close()
    page = browser.new_page(viewport={"width": width, "height": height})
    editor = Editor(page, editor_ui())
    page.on("console", lambda m: (editor.errors if m.type == "error" else editor.warnings).append(m.text)
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: editor.errors.append(f"uncaught: {error}"))
    page.on("response", lambda r: editor.missing.append(r.url.split("/", 3)[-1]) if r.status == 404 else None)
    page.on("request", lambda r: editor.in_flight.add(r))
    page.on("requestfinished", lambda r: editor.in_flight.discard(r))
    page.on("requestfailed", lambda r: editor.in_flight.discard(r))
    page.goto(url, wait_until="networkidle", timeout=180_000)
    page.wait_for_function("window.app?.graph && window.LiteGraph && app.extensionManager?.setting",
                           timeout=90_000)
    settle(editor)  # late extension errors
    close_dialogs(editor)
    editor.opened_with, editor.missing[:] = len(editor.errors), []
    return editor


def settle(editor: Editor, quiet_ms: int = 400, timeout_s: float = 20.0) -> None:
    """Wait until no request has been open for `quiet_ms` (pictures, late scripts) and two frames are drawn."""
    deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
    while time.monotonic() < deadline:
        if editor.in_flight:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_ms / 1000:
            break
        editor.page.wait_for_timeout(50)
    editor.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def close_dialogs(editor: Editor) -> None:
    """Close what the editor opens by itself (the first-run template browser, release notes)."""
    dialogs = editor.page.locator(editor.ui.dialog)
    for _ in range(3):
        if not dialogs.count():
            return
        editor.page.keyboard.press("Escape")
        with contextlib.suppress(PlaywrightTimeout):
            dialogs.first.wait_for(state="detached", timeout=2_000)


def visible_dialog_texts(editor: Editor) -> list[str]:
    return [text for text in editor.page.locator(editor.ui.dialog).all_inner_texts() if text.strip()]


def error_toasts(editor: Editor) -> list[str]:
    return editor.page.locator(".p-toast-message-error").all_inner_texts()


# What the editor records as wrong with the open graph (EditorUI.problem_stores): missing node types,
# model files, pictures, and the last run's errors, read from its own stores.
EDITOR_PROBLEMS = script("problems")


def problems(editor: Editor, model_inputs: list[str]) -> list[str]:
    """What the editor shows as wrong: open dialogs (missing nodes in 1.32), error toasts, and what is behind
    its error notice (1.47: missing nodes, pictures, model files, run errors), except model files missing
    for `model_inputs` (they name the user's files: a user without that exact file is told so, which is no
    fault of the workflow)."""
    found = [f"dialog: {text}" for text in visible_dialog_texts(editor)]
    found += [f"error toast: {text}" for text in error_toasts(editor)]
    if editor.ui.problem_stores:
        found += editor.page.evaluate(EDITOR_PROBLEMS, [list(editor.ui.problem_stores), model_inputs])
    return found


# How long the editor may take for one step on a busy machine; each wait ends as soon as its condition holds.
BUSY_MS = 180_000


def click(locator) -> None:
    """A user's click, without Playwright's wait for the navigations a click may schedule: the editor's router
    rewrites the address's query when a template is opened, and on a busy machine that wait ran out while
    the editor was still working. Callers wait for what the click is for instead."""
    locator.click(no_wait_after=True, timeout=BUSY_MS)


CARDS = "[data-testid^='template-workflow-']"


def _card_name(card) -> str:
    return card.get_attribute("data-testid").removeprefix("template-workflow-")


def _card(editor: Editor, name: str):
    return editor.page.locator(f"[data-testid='template-workflow-{name}']")


def _shown_cards(editor: Editor) -> Iterator:
    """Each card of the open template browser once, scrolling down as it goes: the browser draws only the cards
    near the view (with more workflows than fit, the rest are not in the page until scrolled to)."""
    seen: set[str] = set()
    while True:
        fresh = [card for card in editor.page.locator(CARDS).all() if _card_name(card) not in seen]
        if not fresh:
            return
        for name in [_card_name(card) for card in fresh]:
            if name not in seen:
                seen.add(name)
                card = _card(editor, name)
                card.scroll_into_view_if_needed()
                yield card
        settle(editor)


def _scroll_cards_to_top(editor: Editor) -> None:
    """Scroll the template browser's card list back to its start (drawing the first cards again)."""
    editor.page.locator(CARDS).first.evaluate(
        "card => { let box = card.parentElement; while (box && !(box.scrollHeight > box.clientHeight"
        " && /(auto|scroll)/.test(getComputedStyle(box).overflowY))) box = box.parentElement;"
        " if (box) box.scrollTop = 0; }")
    settle(editor)


def _find_card(editor: Editor, name: str):
    """The card of workflow `name` in the open template browser, scrolled into view."""
    _scroll_cards_to_top(editor)
    for card in _shown_cards(editor):
        if _card_name(card) == name:
            return card
    raise AssertionError(f"the template browser shows no card for {name}")


def pack_templates(editor: Editor) -> list[str]:
    """Open the template browser on the pack's section; the names of the cards shown."""
    page = editor.page
    dialog = page.locator(editor.ui.dialog)
    if not dialog.count():
        click(page.locator(editor.ui.templates_button))
    click(dialog.get_by_text(PACK_FOLDER, exact=True).first)
    page.wait_for_function(script("pack_cards_shown"), arg=PACK_WORKFLOWS, timeout=BUSY_MS)
    settle(editor)
    return [_card_name(card) for card in _shown_cards(editor)]


def template_pictures(editor: Editor) -> dict[str, int]:
    """{workflow: natural width of its card's picture (0: not loaded)} in the open template browser; each
    card scrolled into view in turn, as the cards load their pictures only when seen."""
    widths = {}
    for card in _shown_cards(editor):
        with contextlib.suppress(PlaywrightTimeout):
            card.locator("img").first.wait_for(timeout=10_000)
            card.evaluate("card => new Promise(done => { const img = card.querySelector('img');"
                          " if (img.complete) done(); else { img.onload = img.onerror = done; } })")
        widths[_card_name(card)] = card.evaluate("card => card.querySelector('img')?.naturalWidth ?? 0")
    return widths


def load_template(editor: Editor, name: str) -> None:
    """Load one of the pack's workflows from the template browser, as a user does."""
    page = editor.page
    pack_templates(editor)
    click(_find_card(editor, name))
    try:
        wait_for_workflow(editor, name, timeout_ms=60_000)
    except PlaywrightTimeout:  # a click while the card list was still redrawing after the scroll went nowhere
        pack_templates(editor)
        click(_find_card(editor, name))
        wait_for_workflow(editor, name)
    # the editor closes the browser once the workflow is loaded
    page.locator(editor.ui.dialog).first.wait_for(state="detached", timeout=BUSY_MS)
    settle(editor)


def wait_for_workflow(editor: Editor, name: str, timeout_ms: int = BUSY_MS) -> None:
    """Wait until workflow `name` is the open one (its tab, "name (2)" when one of that name is open)."""
    editor.page.wait_for_function(script("workflow_is_open"), arg=name, timeout=timeout_ms)
    settle(editor)


def drop_workflow(editor: Editor, path: Path) -> None:
    """Drop a workflow file onto the canvas (the editor's file drop handler)."""
    editor.page.evaluate(script("drop_file"), [path.name, path.read_text()])
    wait_for_workflow(editor, path.stem)


def fit_view(editor: Editor) -> None:
    editor.page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    settle(editor)


LAYOUT_CHECK = script("layout")


def layout_report(editor: Editor, model_inputs: list[str]) -> dict:
    """Overlapping nodes, nodes smaller than the editor needs, combo values not among the choices (model
    file inputs excepted: those name the user's files), seeds that change after each run, and unknown
    node types in the loaded graph."""
    return editor.page.evaluate(LAYOUT_CHECK, model_inputs)


def set_setting(editor: Editor, setting: str, value: object) -> None:
    editor.page.evaluate("([id, value]) => app.extensionManager.setting.set(id, value)", [setting, value])
    settle(editor)


def open_node_search(editor: Editor) -> None:
    """Double-click the empty canvas, as a user opens the node search; a few tries while the editor settles."""
    page = editor.page
    search = page.get_by_placeholder(editor.ui.search_placeholder)
    for _ in range(3):
        page.locator("#graph-canvas").dblclick(position={"x": 800, "y": 600})
        try:
            search.wait_for(timeout=5_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    path = editor.screenshot("search_failed")
    raise AssertionError(f"double-clicking the canvas did not open the node search (see {path})")


def search_results(editor: Editor, text: str) -> list[str]:
    """Type `text` into the open node search; the results shown, first first, once one shows `text`."""
    editor.page.get_by_placeholder(editor.ui.search_placeholder).fill(text)
    results = editor.page.locator(editor.ui.search_result)
    results.filter(has_text=text).first.wait_for(timeout=15_000)
    return [" ".join(shown.split()) for shown in results.all_inner_texts() if shown.strip()]


def add_first_search_result(editor: Editor) -> None:
    """Enter in the node search: the first result is added, the search closes. Where the added node then
    follows the cursor until a click places it (1.47's default), move the mouse and click the canvas."""
    page = editor.page
    page.keyboard.press("Enter")
    page.get_by_placeholder(editor.ui.search_placeholder).wait_for(state="hidden", timeout=10_000)
    if page.evaluate("() => app.graph._nodes.some(n => n.flags?.ghost)"):
        box = page.locator("#graph-canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
        page.mouse.click(box["x"] + box["width"] / 2 + 20, box["y"] + box["height"] / 2 + 20)
        page.wait_for_function("() => !app.graph._nodes.some(n => n.flags?.ghost)", timeout=10_000)


def press_run(editor: Editor) -> None:
    click(editor.page.locator(editor.ui.run_button).first)


def wait_for_node_images(editor: Editor, title: str, timeout_ms: int) -> list[str]:
    """Wait until node `title` shows images (loaded); their /view addresses."""
    editor.page.wait_for_function(script("node_images_loaded"),
                                  arg=title, timeout=timeout_ms)
    return editor.page.evaluate("title => app.graph._nodes.find(n => n.title === title).imgs.map(i => i.src)",
                                title)


def set_widget(editor: Editor, title: str, widget: str, value) -> None:
    editor.page.evaluate(script("set_widget"), [title, widget, value])


def registered_types(page: Page) -> dict[str, str]:
    """{node type: category} as the editor registered them."""
    return page.evaluate(script("registered_types"))


def start_up_report(browser: Browser, url: str) -> tuple[list[str], dict[str, str]]:
    """(console errors while the editor started, registered node types) of a fresh editor on `url`."""
    view = open_editor(browser, url)
    try:
        return view.new_errors(since=0), registered_types(view.page)
    finally:
        view.page.close()


def plain_start_up_report(browser: Browser, base: Path) -> tuple[list[str], dict[str, str]]:
    """`start_up_report` of the same host without custom nodes (a server of its own on `base`)."""
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment(),
                     log_path=base / "plain.log",
                     extra_args=["--disable-all-custom-nodes", "--base-directory", str(base)]) as plain:
        return start_up_report(browser, plain.url)
