"""ComfyUI's graph editor in headless Chromium (Debian's package, driven by Playwright): what a user clicks.

Console messages are kept per page so tests can tell the pack's errors from the editor's own.
Connections the editor makes to comfy.org (node registry, blocked by the editor's own content
security policy on an offline machine) are its own, whatever is installed.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

PACK_FOLDER = "comfyui_layer_sketch"  # the pack's folder name in custom_nodes: the template browser's label
OFFLINE_NOISE = re.compile(r"api\.comfy\.org|Content Security Policy")


@dataclass
class Editor:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions, in order
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # addresses the server answered 404 for
    opened_with: int = 0  # errors logged while the editor started

    def new_errors(self, since: int | None = None) -> list[str]:
        """Errors after the first `since` (default: after start-up), addresses made neutral, the editor's
        offline noise left out."""
        since = self.opened_with if since is None else since
        found = [re.sub(r"127\.0\.0\.1:\d+", "HOST", e) for e in self.errors[since:]]
        return [e for e in found if not OFFLINE_NOISE.search(e)]


def open_editor(browser: Browser, url: str, width: int = 1400, height: int = 900) -> Editor:
    """The editor as a returning user sees it: the default graph, no first-run template browser."""
    request = urllib.request.Request(f"{url}/api/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
    urllib.request.urlopen(request, timeout=30).close()
    page = browser.new_page(viewport={"width": width, "height": height})
    editor = Editor(page)
    page.on("console", lambda m: (editor.errors if m.type == "error" else editor.warnings).append(m.text)
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: editor.errors.append(f"uncaught: {error}"))
    page.on("response", lambda r: editor.missing.append(r.url.split("/", 3)[-1]) if r.status == 404 else None)
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
    page.wait_for_timeout(1500)  # late extension errors
    close_dialogs(page)
    editor.opened_with, editor.missing[:] = len(editor.errors), []
    return editor


def close_dialogs(page: Page) -> None:
    """Close what the editor opens by itself (the first-run template browser, release notes)."""
    for _ in range(3):
        if not page.locator(".p-dialog").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def visible_dialog_texts(page: Page) -> list[str]:
    return [text for text in page.locator(".p-dialog").all_inner_texts() if text.strip()]


def error_toasts(page: Page) -> list[str]:
    return page.locator(".p-toast-message-error").all_inner_texts()


def pack_templates(page: Page) -> list[str]:
    """Open the template browser on the pack's section; the names of the cards shown."""
    dialog = page.locator(".p-dialog")
    if not dialog.count():
        page.locator("button.templates-tab-button").click()
    dialog.get_by_text(PACK_FOLDER).first.click()
    page.wait_for_timeout(500)
    cards = dialog.locator("[data-testid^='template-workflow-']")
    return [card.get_attribute("data-testid").removeprefix("template-workflow-") for card in cards.all()]


def load_template(page: Page, name: str) -> None:
    """Load one of the pack's workflows from the template browser, as a user does."""
    pack_templates(page)
    page.locator(f"[data-testid='template-workflow-{name}']").click()
    page.locator(".p-dialog").first.wait_for(state="detached", timeout=30_000)
    page.wait_for_function("name => document.title.replace(/^\\*/, '') === `${name} - ComfyUI`"
                           " && app.graph._nodes.length > 0", arg=name, timeout=30_000)
    page.wait_for_timeout(500)


def drop_workflow(page: Page, path: Path) -> None:
    """Drop a workflow file onto the canvas (the editor's file drop handler)."""
    page.evaluate("""([name, text]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([text], name, {type: "application/json"}));
        document.querySelector("#graph-canvas").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", [path.name, path.read_text()])
    page.wait_for_timeout(1500)


def fit_view(page: Page) -> None:
    page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(300)


LAYOUT_CHECK = """(missingAllowed) => {
    const nodes = app.graph._nodes;
    const boxes = nodes.map(n => [n, n.getBounding()]);
    const overlaps = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const [a, ra] = boxes[i], [b, rb] = boxes[j];
        if (ra[0] < rb[0] + rb[2] && rb[0] < ra[0] + ra[2] && ra[1] < rb[1] + rb[3] && rb[1] < ra[1] + ra[3])
            overlaps.push(`${a.title} ${Array.from(ra)} / ${b.title} ${Array.from(rb)}`);
    }
    const cramped = nodes
        .filter(n => { const min = n.computeSize(); return n.size[0] + 1 < min[0] || n.size[1] + 1 < min[1]; })
        .map(n => `${n.title}: ${Array.from(n.size)} < ${Array.from(n.computeSize())}`);
    const invalid = [];
    for (const n of nodes) for (const w of n.widgets ?? []) {
        const values = w.options?.values;
        if (Array.isArray(values) && !values.includes(w.value) && !missingAllowed.includes(w.name))
            invalid.push(`${n.title}.${w.name} = ${w.value}`);
    }
    const randomized = nodes.flatMap(n => (n.widgets ?? []).filter(w => w.name === "control_after_generate"
        && w.value !== "fixed").map(w => `${n.title}: ${w.value}`));
    const unknown = nodes.filter(n => !(n.type in LiteGraph.registered_node_types) || n.has_errors).map(n => n.type);
    return {overlaps, cramped, invalid, randomized, unknown, types: nodes.map(n => n.type)};
}"""


def layout_report(page: Page, model_inputs: list[str]) -> dict:
    """Overlapping nodes, nodes smaller than the editor needs, combo values not among the choices (model
    file inputs excepted: those name the user's files), seeds that change after each run, and unknown
    node types in the loaded graph."""
    return page.evaluate(LAYOUT_CHECK, model_inputs)


def set_setting(page: Page, setting: str, value: object) -> None:
    page.evaluate("([id, value]) => app.extensionManager.setting.set(id, value)", [setting, value])
    page.wait_for_timeout(200)


def open_node_search(page: Page, artifacts: Path) -> None:
    """Double-click the empty canvas, as a user opens the node search; a few tries while the editor settles."""
    search = page.get_by_placeholder("Search Nodes...")
    for _ in range(3):
        page.locator("#graph-canvas").dblclick(position={"x": 800, "y": 600})
        try:
            search.wait_for(timeout=5_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "search_failed.png"))
    raise AssertionError(f"double-clicking the canvas did not open the node search (see {artifacts})")
