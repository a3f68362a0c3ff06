"""The real multipage app in headless Chromium against a real Streamlit server on a small real run
(fixtures in conftest.py): Overview, Browse, Latent, Scores and Jobs pages, a real rescoring job
followed to the end, figure and table downloads, and hostile HTML from the corpus and from an
explanation shown as inert text. Every test fails on any page error, console error or Python
exception shown on a page. Elements are found by their visible text and labels; the pages' URLs
are /, /Browse, /Latent, /Scores, /Analyses and /Jobs."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pandas as pd
from playwright.sync_api import expect

from autointerp.store import RunStore

# Would any hostile markup have become live DOM or run? Checked over the whole document.
LIVE_MARKUP_JS = """() => ({
  xss: typeof window.__xss,
  scripts: [...document.scripts].filter(s => s.textContent.includes('__xss')).length,
  onerror: document.querySelectorAll('[onerror]').length,
  bold: [...document.querySelectorAll('b')].filter(b => b.textContent === 'bold').length,
})"""
INERT = {"xss": "undefined", "scripts": 0, "onerror": 0, "bold": 0}
JOB_TIMEOUT_MS = 240_000


def eventually(get, ok, timeout: float = 30.0):
    """`get()` once `ok(get())` holds, retried for `timeout` s, also when `get()` raises (a page
    read while it redraws); the last value or error fails the assert."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value, error = get(), None
            if ok(value):
                return value
        except (AssertionError, ValueError, KeyError, AttributeError) as e:
            value, error = None, e
        assert time.monotonic() < deadline, f"still not as expected after {timeout} s: {error or repr(value)}"
        time.sleep(0.25)


def latent_url(e2e, latent: int) -> str:
    return f"Latent?run={e2e.run}&set={e2e.hookpoint}&latent={latent}"


def test_overview_shows_the_run_and_its_latent_sets(app, e2e_data):
    app.open()
    page = app.page
    expect(page.get_by_role("heading", name="autointerp", exact=True)).to_be_visible()
    run = page.get_by_role("combobox", name="Run").input_value()
    assert run.startswith(f"{e2e_data.run} "), run
    metrics = dict(m.split("\n\n") for m in page.locator('[data-testid="stMetric"]').all_inner_texts())
    assert metrics == {"Subject model": "smollm2", "Dtype": "float32", "Tokens cached": f"{e2e_data.n_tokens:,}",
                       "Latent sets": "2", "Status": "complete"}, metrics  # the e2e run is cached in float32
    sets = app.table().set_index("latent set")
    assert list(sets.index) == [e2e_data.neuron_set, e2e_data.hookpoint]
    sae = sets.loc[e2e_data.hookpoint]
    assert (sae.coder, sae.latents, sae.explained, sae.scored) == ("sae", "4096", "5", "5")
    assert sets.loc[e2e_data.neuron_set, "explained"] == "0"
    total = sets.latents.astype(int).sum()  # 4,096 SAE latents + 1,536 MLP neurons
    expect(page.get_by_text(f"5 of {total:,} latents explained, 5 scored.")).to_be_visible()
    nav = page.locator('[data-testid="stSidebarNav"]')
    expect(nav.get_by_text("Overview", exact=True)).to_be_visible()  # not the entry script's name
    assert nav.get_by_text("app", exact=True).count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0  # toolbarMode = "viewer"
    app.screenshot("overview")


def test_browse_a_latent_set_and_open_a_latent(app, e2e_data):
    app.open("Browse")
    page = app.page
    expect(page.get_by_role("heading", name=f"Browse {e2e_data.neuron_set}")).to_be_visible()  # the first set
    app.select("Latent set (hookpoint)", e2e_data.hookpoint)
    expect(page.get_by_role("heading", name=f"Browse {e2e_data.hookpoint}")).to_be_visible()
    assert f"set={e2e_data.hookpoint}" in page.url  # the choice is kept in the URL
    expect(page.get_by_text("4,096 of 4,096 latents match.")).to_be_visible()
    # most frequent first; the fixture's explanations on their rows. The grid draws the rows and
    # columns in view (the scorer columns are further right) and repaints a moment after a run.
    table = eventually(lambda: app.table(), lambda t: str(e2e_data.benign_latents[0]) in t.latent.tolist())
    assert {"latent", "frequency", "explanation"} <= set(table.columns), table.columns
    assert len(table) > 5 and table.frequency.astype(float).is_monotonic_decreasing
    rows = table.set_index("latent")
    shown = [x for x in e2e_data.explained if str(x) in rows.index]
    assert shown and all(rows.loc[str(x), "explanation"] == e2e_data.explained[x] for x in shown)
    # sort by a scorer: the fixture's detection scores rise with each explained latent's position
    app.select("Sort by", "detection")
    expected = [str(x) for x in reversed(e2e_data.explained)]
    eventually(lambda: app.table().latent.tolist()[:len(expected)], lambda top: top == expected)
    # by the 95% lower bound: the narrow intervals (even positions) first, then the wide ones
    app.select("Sort by", "detection low")
    order = list(e2e_data.explained)
    by_low = [str(order[i]) for i in (4, 2, 0, 3, 1)]
    eventually(lambda: app.table().latent.tolist()[:len(by_low)], lambda top: top == by_low)
    app.select("Sort by", "frequency")
    app.screenshot("browse")

    target = e2e_data.benign_latents[1]
    app.set_number("Latent id", target)
    page.get_by_role("button", name="Open latent page").click()
    page.wait_for_url(re.compile(rf"/Latent\?.*latent={target}\b"))
    expect(page.get_by_role("heading", name=f"{e2e_data.hookpoint} · latent {target}")).to_be_visible()
    assert f"set={e2e_data.hookpoint}" in page.url and f"run={e2e_data.run}" in page.url
    expect(page.locator('[data-testid="stText"]').first).to_have_text(e2e_data.explained[target])
    # the examples come after the logit lens, which loads SmolLM2's unembedding on first use
    expect(page.locator(".ai-example").first).to_be_visible(timeout=60_000)
    expect(page.get_by_label("Latent", exact=True)).to_have_value(str(target))


def test_hostile_corpus_text_and_explanation_are_shown_inertly(app, e2e_data):
    page = app.page
    by_latent: dict[int, list[str]] = {}
    for kind, latent in e2e_data.hostile_latents.items():
        by_latent.setdefault(latent, []).append(kind)
    for latent, kinds in sorted(by_latent.items()):
        app.open(latent_url(e2e_data, latent))
        expect(page.get_by_role("heading", name=f"{e2e_data.hookpoint} · latent {latent}")).to_be_visible()
        examples = page.locator(".ai-example")
        expect(examples.first).to_be_visible()
        for kind in kinds:  # the markup is on screen as literal text
            expect(examples.filter(has_text=e2e_data.payloads[kind]).first).to_be_visible()
        assert examples.locator("script, img, b, iframe, object, embed, svg, [onerror]").count() == 0
        assert page.evaluate(LIVE_MARKUP_JS) == INERT
    # The XSS latent's explanation (LLM output) holds markup too: literal text, on both pages.
    app.open(latent_url(e2e_data, e2e_data.xss_latent))
    explanation = page.locator('[data-testid="stText"]').first
    expect(explanation).to_have_text(e2e_data.hostile_explanation)
    assert explanation.locator("*:not(span)").count() == 0  # st.text's own span, no elements from the text
    assert page.evaluate(LIVE_MARKUP_JS) == INERT
    app.open("Browse?set=" + e2e_data.hookpoint)
    app.set_text("Explanation contains", "window.__xss")
    expect(page.get_by_text("1 of 4,096 latents match.")).to_be_visible()
    row = eventually(lambda: app.table(), lambda t: len(t) == 1).iloc[0]
    assert (row.latent, row.explanation) == (str(e2e_data.xss_latent), e2e_data.hostile_explanation)
    assert page.evaluate(LIVE_MARKUP_JS) == INERT


def test_rescore_a_latent_from_its_page_and_follow_the_job(app, e2e_data):
    """Re-scoring one latent with the embedding scorer (MiniLM; SmolLM2 named as the model) runs a
    real background job; the Jobs page follows it to done and the Latent page shows the new score."""
    page = app.page
    latent = e2e_data.benign_latents[0]
    store = RunStore(e2e_data.run_dir)
    before = store.latent_results("scores", e2e_data.hookpoint, latent)
    app.open(latent_url(e2e_data, latent))
    scores = app.table().set_index("scorer")
    assert set(scores.index) == {"detection", "embedding"}
    old = scores.loc["embedding"]
    assert old.model == "fixture"
    # each score with its 95% interval, marked where it holds chance (this latent's detection interval
    # is a wide one); embedding's score predates intervals
    assert scores.loc["detection", "95% CI"] == "[0.33, 0.73] ≈ chance" and old["95% CI"] == "–"

    form = page.locator('[data-testid="stForm"]')
    expect(form).to_contain_text("Launch on 1 latent(s)")
    form.get_by_text("Re-explain", exact=True).click()  # keep the explanation; score it again
    expect(form.get_by_role("checkbox", name="Re-explain")).not_to_be_checked()
    expect(form.get_by_role("checkbox", name="Score")).to_be_checked()
    form.get_by_label("Model", exact=True).fill("smollm2")
    for scorer in ("detection", "fuzzing"):  # the defaults other than embedding
        form.get_by_role("button", name=f"Remove {scorer}").click()
    expect(form.get_by_role("group", name="Selected values")).to_have_text("embedding")
    app.rerun(lambda: form.get_by_role("button", name="Launch on 1 latent(s)").click())
    launched = page.locator('[data-testid="stAlertContentSuccess"]')
    expect(launched).to_contain_text("Launched job")
    job_id = re.search(r"Launched job (\S+):", launched.inner_text()).group(1)

    app.open("Jobs")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    job = page.locator('[data-testid="stMain"]')  # this session's only job
    expect(job).to_contain_text(f"score {e2e_data.hookpoint} latents {latent} (transformers:smollm2)")
    # the page refreshes itself every 2 s (st.fragment) until the job is done
    expect(page.get_by_text(f"done · {job_id}")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(job).to_contain_text("1/1 latents")
    assert page.get_by_text(f"failed · {job_id}").count() == 0
    app.screenshot("jobs")

    after = store.latent_results("scores", e2e_data.hookpoint, latent)
    assert len(after) == len(before) + 1  # the new score joined the history
    app.open(latent_url(e2e_data, latent))
    scores = app.table().set_index("scorer")
    new = scores.loc["embedding"]
    assert (new.model, new["mode"]) == ("all-MiniLM-L6-v2", "similarity")
    assert new.created_at > old.created_at
    assert 0.0 <= float(new.auroc) <= 1.0
    assert scores.loc["detection", "model"] == "fixture"  # the other scorer's score is untouched
    app.screenshot("latent")


def test_figure_and_table_downloads(app, e2e_data, tmp_path):
    from PIL import Image

    page = app.page
    latent = e2e_data.benign_latents[1]
    app.open(latent_url(e2e_data, latent))
    buttons = page.locator('[data-testid="stDownloadButton"]')
    files = {fmt: app.download(buttons.get_by_role("button", name=fmt.upper(), exact=True), tmp_path)
             for fmt in ("png", "svg", "pdf")}
    for fmt, path in files.items():
        assert path.name == f"{e2e_data.run}-{e2e_data.hookpoint}-{latent}-histogram.{fmt}"
    png = files["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(files["png"]) as im:
        im.verify()
    with Image.open(files["png"]) as im:
        assert im.format == "PNG" and min(im.size) >= 200 and len(set(im.convert("L").getextrema())) == 2
    root = ET.parse(files["svg"]).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "activations" in files["svg"].read_text()  # the figure's title
    pdf = files["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:] and len(pdf) > 1000

    app.open("Browse?set=" + e2e_data.hookpoint)
    csv = app.download(page.get_by_role("button", name="CSV (all matching)"), tmp_path)
    assert csv.name == f"{e2e_data.run}-{e2e_data.hookpoint}-latents.csv"
    table = pd.read_csv(csv)
    assert len(table) == 4096 and {"latent", "frequency", "explanation", "detection", "embedding"} <= set(table)
    explained = table.dropna(subset=["explanation"]).set_index("latent").explanation.to_dict()
    assert explained == e2e_data.explained


def test_scores_page_shows_distributions_correlations_and_deciles(app, e2e_data):
    app.open("Scores")
    page = app.page
    expect(page.get_by_role("heading", name="Scores · all latent sets")).to_be_visible()
    for heading in ("Score distributions (5 latents)", "Spearman correlation between scorers",
                    "Accuracy per activation decile"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    charts = page.locator('[data-testid="stPlotlyChart"]')
    expect(charts).to_have_count(3)
    for i in range(3):
        expect(charts.nth(i).locator("svg.main-svg").first).to_be_visible()
    rho, n = app.table(0).set_index(""), app.table(1).set_index("")
    assert set(rho.index) == {"detection", "embedding"} and float(rho.loc["detection", "detection"]) == 1.0
    assert int(n.loc["detection", "embedding"]) == 5
    app.screenshot("scores")
    app.select("Latent sets", e2e_data.hookpoint)
    expect(page.get_by_role("heading", name=f"Scores · {e2e_data.hookpoint}")).to_be_visible()
    expect(charts).to_have_count(3)


def test_analyses_page_shows_every_study_and_its_pairs_open_latent_pages(app, e2e_data):
    app.open("Analyses")
    page = app.page
    for heading in ("Sampling strategies", "SAE latents vs neurons", "Adjacent-layer overlap", "Scorer agreement"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    charts = page.locator('[data-testid="stPlotlyChart"]')
    expect(charts).to_have_count(6)  # sampling x2, coders x2, overlap, agreement
    for i in range(6):
        expect(charts.nth(i).locator("svg.main-svg").first).to_be_visible()
    sampling = app.table(0)
    assert list(sampling.condition) == ["top", "random", "quantiles", "mix"]
    assert set(sampling.n) == {str(len(e2e_data.explained))}
    app.screenshot("analyses")
    # a matched pair's link opens the latent's page (the pairs table holds Latent?run=&set=&latent= links)
    latent = next(iter(e2e_data.explained))
    app.open(latent_url(e2e_data, latent))
    expect(page.get_by_role("heading", name=f"{e2e_data.hookpoint} · latent {latent}")).to_be_visible()


def test_jobs_page_loads(app):
    app.open("Jobs")
    expect(app.page.get_by_role("heading", name="Jobs")).to_be_visible()
    # one self-refresh of the job list (an st.fragment run every 2 s), still without errors
    app.page.wait_for_function("n => window.__stRuns > n", arg=app._runs(), timeout=30_000)


def test_the_xss_checks_detect_live_markup(browser, e2e_data):
    """Control: the same hostile documents and explanation injected as raw HTML do run in this
    browser, so the checks above would catch a regression in escaping."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<div>" + "".join(e2e_data.hostile_docs) + e2e_data.hostile_explanation + "</div>")
        page.wait_for_function("() => [2, 4].includes(window.__xss)")  # an img's onerror handler ran
        live = page.evaluate(LIVE_MARKUP_JS)
        assert live["scripts"] > 0 and live["onerror"] > 0 and live["bold"] > 0
    finally:
        context.close()
