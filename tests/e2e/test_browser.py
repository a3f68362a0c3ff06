"""The real app in headless Chromium against a real Streamlit server on a small real run
(fixtures in conftest.py). Elements are found by their visible text and labels."""

from __future__ import annotations

from playwright.sync_api import expect

# Would any hostile markup have become live DOM or run? Checked over the whole document.
LIVE_MARKUP_JS = """() => ({
  xss: typeof window.__xss,
  scripts: [...document.scripts].filter(s => s.textContent.includes('__xss')).length,
  onerror: document.querySelectorAll('[onerror]').length,
  bold: [...document.querySelectorAll('b')].filter(b => b.textContent === 'bold').length,
})"""
INERT = {"xss": "undefined", "scripts": 0, "onerror": 0, "bold": 0}


def test_app_loads_and_shows_the_run(app, e2e_data):
    app.open()
    page = app.page
    expect(page.get_by_role("heading", name="autointerp")).to_be_visible()
    chosen = page.get_by_role("combobox").evaluate_all("els => els.map(e => e.value)")  # selectboxes' values
    assert any(e2e_data.run in v for v in chosen) and e2e_data.hookpoint in chosen, chosen
    expect(page.get_by_text(f"{e2e_data.n_tokens:,}")).to_be_visible()  # tokens cached
    expect(page.get_by_text("4,096").first).to_be_visible()  # the SAE's latents
    # the first latent's top examples are rendered, with highlighted tokens
    expect(page.locator(".ai-example").first).to_be_visible()
    assert page.locator(".ai-example .ai-act").count() > 0
    app.screenshot("app-overview")


def test_hostile_corpus_text_is_shown_inertly(app, e2e_data):
    app.open()
    page = app.page
    by_latent: dict[int, list[str]] = {}
    for kind, latent in e2e_data.hostile_latents.items():
        by_latent.setdefault(latent, []).append(kind)
    for latent, kinds in sorted(by_latent.items()):
        app.set_number("Latent", latent)
        expect(page.get_by_role("heading", name=f"Latent {latent}")).to_be_visible()
        examples = page.locator(".ai-example")
        expect(examples.first).to_be_visible()
        for kind in kinds:  # the markup is on screen as literal text
            expect(examples.filter(has_text=e2e_data.payloads[kind]).first).to_be_visible()
        assert examples.locator("script, img, b, iframe, object, embed, svg").count() == 0
        assert page.evaluate(LIVE_MARKUP_JS) == INERT
    expect(page.locator(".ai-example", has_text="<script>").first).to_be_visible()
    app.screenshot("latent-examples-escaped")


def test_the_xss_checks_detect_live_markup(browser, e2e_data):
    """Control: the same hostile documents injected as raw HTML do run in this browser, so the
    checks above would catch a regression in escaping."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<div>" + "".join(e2e_data.hostile_docs) + "</div>")
        page.wait_for_function("() => window.__xss === 2")  # the img's onerror handler ran last
        live = page.evaluate(LIVE_MARKUP_JS)
        assert live["scripts"] > 0 and live["onerror"] > 0 and live["bold"] > 0
    finally:
        context.close()
