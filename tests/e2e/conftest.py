"""End-to-end browser fixtures: a small real run, the real Streamlit server, headless Chromium.

* `e2e_data` (session): SmolLM2-135M + the committed demo SAE on resid_post.15 and the top-8 MLP
  neurons of layer 15 (a second latent set), cached over a few hundred real Wikipedia summaries plus
  documents holding hostile HTML, with fixture explanations and detection + embedding scores on five
  SAE latents (one explanation holds hostile HTML); yields an `E2EData` with the data folder, the
  run, those explanations and, per hostile payload, a latent whose top examples show it.
* `app_server` (session): `streamlit run app.py` on a free 127.0.0.1 port with AUTOINTERP_DATA set to
  that data folder; yields its URL. Its log is printed when a test fails.
* `browser` (session): Playwright's Chromium driver on Debian's /usr/bin/chromium (never
  `playwright install`).
* `page` (function): a fresh context and page; any `pageerror`, console error or Python exception
  shown on the page fails the test at teardown (AppPage also checks for exceptions after every run).
* `app` (function): an `AppPage` around `page` that opens the app and waits for script runs.
* `screenshot` (function): `screenshot(page, name)` writes docs/screenshots/<name>.png when
  AUTOINTERP_SCREENSHOTS=1 (also `AppPage.screenshot`).

Waiting for Streamlit: the root element `[data-testid="stApp"]` carries `data-test-script-state`
(`initial` -> `running` -> `notRunning`) and `data-test-connection-state` (`CONNECTED`). A
MutationObserver injected before the app's scripts counts every change to `notRunning`, so an
interaction waits for *its own* run to finish instead of seeing the previous run's `notRunning`.
Elements whose code is loaded lazily (st.html, charts) show a `stSkeleton` placeholder for a moment
after the run has finished, so a settled page also has no skeleton left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SAE_DIR = ROOT / "data" / "saes" / "smollm2-4096x32" / "resid_post.15"
HOOKPOINT = "resid_post.15"
# A second, cheap latent set (sorted first), so picking resid_post.15 in the sidebar is a real choice.
NEURON_CODER, NEURON_SET = "topk:8@mlp_neurons.15", "mlp_neurons.15-topk8"
N_WIKI_DOCS = 200
# Untrusted corpus text that must reach the browser as inert text.
HOSTILE_DOCS = [
    "A comment field on the web page held <script>window.__xss=1</script> and nothing else.",
    'An attacker pasted the tag <img src=x onerror="window.__xss=2"> into the profile form.',
    "Stray closing tags such as </div><b>bold</b> break a page layout when they are not escaped.",
    'Markup test: <script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> </div><b>bold</b> end.',
]
HOSTILE_COPIES = 4
# An explanation (LLM output) holding markup: the Latent page must show it as literal text.
HOSTILE_EXPLANATION = ('<script>window.__xss=3</script> <img src=x onerror="window.__xss=4"> '
                       '</div><b>bold</b> **markdown** tags in web pages')
# Fixture-explained latents must be silent in at least this many windows (InterpretConfig's n_negative).
MIN_SILENT_WINDOWS = 20
EXPLANATIONS = ["common function words", "dates and years", "names of places", "punctuation after clauses"]
# What each payload looks like in a window's text (tokens joined).
PAYLOADS = {"script": "<script>window.__xss=1", "img": 'onerror="window.__xss=2"', "tags": "</div><b>bold</b>"}

# Counts finished script runs: every change of stApp's data-test-script-state to notRunning.
RUN_COUNTER_JS = """
(() => {
  window.__stRuns = 0;
  let last = null;
  const step = state => {
    if (state !== last) {
      if (state === 'notRunning') window.__stRuns += 1;
      last = state;
    }
  };
  new MutationObserver(records => {
    // Each record's oldValue is a state the attribute held: a short run whose running and notRunning
    // changes arrive in one batch is still counted.
    for (const r of records) {
      if (r.type === 'attributes' && r.target.getAttribute('data-testid') === 'stApp') step(r.oldValue);
    }
    const el = document.querySelector('[data-testid="stApp"]');
    step(el ? el.getAttribute('data-test-script-state') : null);
  }).observe(document, {subtree: true, childList: true, attributes: true, attributeOldValue: true,
                        attributeFilter: ['data-test-script-state']});
})();
"""
SETTLED_JS = """n => {
  const el = document.querySelector('[data-testid="stApp"]');
  return window.__stRuns > n && el && el.getAttribute('data-test-script-state') === 'notRunning'
         && el.getAttribute('data-test-connection-state') === 'CONNECTED'
         && !document.querySelector('[data-testid="stSkeleton"]');
}"""

# The accessible table of st.dataframe number n, once it is drawn whole and unchanged since the
# previous animation frame; null (wait on) while headers and cells disagree or are still changing.
GRID_JS = """n => {
  const grid = document.querySelectorAll('[data-testid="stDataFrame"]')[n];
  if (!grid) return null;
  const head = [...grid.querySelectorAll('th[role="columnheader"]')].map(th => th.innerText);
  const rows = [...grid.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(td => td.textContent));
  if (!head.length || !rows.length) return null;
  const width = rows[0].length;
  if (!width || rows.some(r => r.length !== width) || head.length < width || head.length > width + 1) return null;
  const snap = JSON.stringify([head, rows]);
  const memo = window.__gridReads || (window.__gridReads = {});
  const stable = memo[n] === snap;
  memo[n] = snap;
  return stable ? {head: head.slice(head.length - width), rows} : null;
}"""
# Resolves after two animation frames: the browser has painted what the last change drew.
TWO_FRAMES_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"

SCREENSHOT_MAX_HEIGHT = 5000
# Python exceptions a page shows (st.exception boxes: an uncaught error in a page script).
EXCEPTIONS_JS = """() => [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 800))"""
# What a timed-out wait reports.
STATE_JS = """() => {
  const el = document.querySelector('[data-testid="stApp"]');
  return {url: location.href, runs: window.__stRuns, script: el && el.getAttribute('data-test-script-state'),
          connection: el && el.getAttribute('data-test-connection-state'),
          skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
          exceptions: [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 500))};
}"""


@dataclass
class E2EData:
    data_dir: Path  # AUTOINTERP_DATA for the server
    run_dir: Path
    run: str
    hookpoint: str
    hostile_latents: dict[str, int]  # payload kind -> a latent whose shown top examples contain it
    n_tokens: int
    build_s: float
    hostile_docs: tuple[str, ...] = tuple(HOSTILE_DOCS)
    payloads: dict[str, str] = field(default_factory=lambda: dict(PAYLOADS))  # kind -> text in a window
    explained: dict[int, str] = field(default_factory=dict)  # latent -> fixture explanation (scored twice)
    hostile_explanation: str = HOSTILE_EXPLANATION  # the XSS latent's explanation
    neuron_set: str = NEURON_SET  # the run's other latent set (sorted first)

    @property
    def xss_latent(self) -> int:
        """The latent whose shown top examples contain `<script>window.__xss=1`."""
        return self.hostile_latents["script"]

    @property
    def benign_latents(self) -> list[int]:
        """Explained and scored latents other than the XSS one (most frequent first)."""
        return [x for x in self.explained if x != self.xss_latent]


def _hostile_latents(run_dir: Path, hookpoint: str, n_shown: int = 10) -> dict[str, int]:
    """For each payload in PAYLOADS, a latent whose `n_shown` top examples (what the app shows)
    contain it; latents covering several payloads are preferred, so usually one or two latents."""
    import pyarrow.parquet as pq

    from autointerp.store import RunStore

    store = RunStore(run_dir)
    strings = store.token_strings
    hostile = [d for d, row in enumerate(store.tokens)
               if any(p in "".join(strings.get(int(t), "") for t in row) for p in PAYLOADS.values())]
    acts = pq.read_table(run_dir / "acts" / hookpoint / "acts.parquet").to_pandas()
    stats, _ = store.latent_table(hookpoint, sort="latent", descending=False, limit=store.n_latents(hookpoint))
    # Latents whose strongest activation is (close to) inside a hostile context come first.
    ratio = (acts[acts.doc_id.isin(hostile)].groupby("latent").value.max()
             / stats.set_index("latent").max_act).dropna().sort_values(ascending=False)
    shown: dict[int, set[str]] = {}
    for latent in ratio.index[:150]:
        texts = ["".join(e.tokens) for e in store.top_examples(hookpoint, int(latent), n=n_shown)]
        kinds = {k for k, p in PAYLOADS.items() if any(p in t for t in texts)}
        if kinds:
            shown[int(latent)] = kinds
    chosen: dict[str, int] = {}
    for latent, kinds in sorted(shown.items(), key=lambda kv: -len(kv[1])):
        for k in kinds - chosen.keys():
            chosen[k] = latent
    missing = PAYLOADS.keys() - chosen.keys()
    assert not missing, f"no latent's top {n_shown} examples show {sorted(missing)}; found {shown}"
    return chosen


def build_e2e_data(data: Path, subject) -> E2EData:
    """Cache the e2e run into the folder `data` (AUTOINTERP_DATA) and write its results."""
    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig
    from autointerp.models.corpus import load_texts

    if not (SAE_DIR / "sae_weights.safetensors").exists():
        pytest.fail(f"demo SAE missing at {SAE_DIR}: it is committed in data/saes (or run `autointerp demo`)")
    t0 = time.perf_counter()
    for shared in ("models", "saes"):  # pages that load a model or SAE find the real ones
        if (ROOT / "data" / shared).exists():
            (data / shared).symlink_to(ROOT / "data" / shared, target_is_directory=True)
    docs = load_texts("wiki")[:N_WIKI_DOCS] + HOSTILE_DOCS * HOSTILE_COPIES
    corpus = data / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    # The whole corpus, cut into full contexts (documents are joined with an EOS token each).
    n_tokens = sum(len(ids) + 1 for ids in subject.tokenizer(docs, add_special_tokens=False)["input_ids"])
    ctx_len = 64
    run_dir = data / "runs" / "e2e"
    cfg = CacheConfig(run=str(run_dir), model="smollm2", corpus=str(corpus), coders=[f"sae:{SAE_DIR}", NEURON_CODER],
                      tokens=(n_tokens // ctx_len) * ctx_len, ctx_len=ctx_len, part_contexts=256,
                      coder_dtype="float32")  # tests compare numbers: float32 on every CPU
    cache_run(cfg, subject=subject)
    latents = _hostile_latents(run_dir, HOOKPOINT)
    explained = _write_results(run_dir, HOOKPOINT, latents["script"], set(latents.values()))
    return E2EData(data, run_dir, "e2e", HOOKPOINT, latents, cfg.tokens, time.perf_counter() - t0,
                   explained=explained)


def _write_results(run_dir: Path, hookpoint: str, xss_latent: int, avoid: set[int]) -> dict[int, str]:
    """Explanations and detection + embedding scores (rows as `autointerp explain/score` write them)
    for the XSS latent, whose explanation is HOSTILE_EXPLANATION, and the most frequent other latents,
    so the Scores page has distributions, a Spearman matrix and per-decile accuracies."""
    from autointerp.store import RunStore, append_results

    store = RunStore(run_dir)
    top, _ = store.latent_table(hookpoint, sort="frequency", limit=len(avoid) + len(EXPLANATIONS) + 40)
    # the most frequent latents that can be scored for real (the rescoring test runs a job on one):
    # a dense latent silent in too few windows is a recorded failure, not a score
    others = [int(x) for x in top.latent if int(x) not in avoid
              and len(store.non_activating_examples(hookpoint, int(x), MIN_SILENT_WINDOWS, seed=0))
              >= MIN_SILENT_WINDOWS][:len(EXPLANATIONS)]
    assert len(others) == len(EXPLANATIONS), f"too few scoreable frequent latents: {others}"
    explained = {xss_latent: HOSTILE_EXPLANATION, **dict(zip(others, EXPLANATIONS))}
    append_results(run_dir, "explanations", [
        {"hookpoint": hookpoint, "latent": x, "explanation": t, "model": "fixture", "strategy": "top",
         "n_examples": 20} for x, t in explained.items()])
    scores = []
    for i, (x, t) in enumerate(explained.items()):
        for scorer, value in (("detection", 0.55 + 0.08 * i), ("embedding", 0.5 + 0.07 * i)):
            # detection carries 95% intervals whose lower bounds order the latents differently from
            # the values (even positions narrow, odd ones wide); embedding's were stored before intervals
            lo, hi = ((round(value - (0.05 if i % 2 == 0 else 0.3), 2), round(min(1.0, value + 0.1), 2))
                      if scorer == "detection" else (None, None))
            scores.append({"score_id": uuid.uuid4().hex, "hookpoint": hookpoint, "latent": x, "scorer": scorer,
                           "explanation": t, "auroc": value, "auroc_lo": lo, "auroc_hi": hi, "n": 40,
                           "n_failed": i % 2, "model": "fixture",
                           "mode": "logprob", "correlation_per_quantile": "{}",
                           "accuracy_per_decile": json.dumps({"0": 0.8, "1": 0.4 + 0.05 * i, "5": 0.6, "10": 0.9})})
    append_results(run_dir, "scores", scores)
    _write_studies(run_dir, hookpoint, list(explained))
    return explained


def _write_studies(run_dir: Path, hookpoint: str, latents: list[int]) -> None:
    """Rows of a sampling, a coders and an overlap study (as `autointerp analyze` writes them),
    so the Analyses page has every section; the overlap pairs match the run's latents to themselves."""
    from autointerp.store import append_results

    rows = []
    for study, conditions in (("sampling", ("top", "random", "quantiles", "mix")),
                              ("coders", (hookpoint, "mlp_neurons.15-topk32"))):
        sid = uuid.uuid4().hex
        rows += [{"study_id": sid, "study": study, "condition": c, "hookpoint": hookpoint, "latent": x,
                  "scorer": "detection", "explanation": f"{c} {x}", "value": 0.55 + 0.05 * j + 0.02 * i, "n": 30,
                  "n_failed": 0, "model": "fixture",
                  "accuracy_per_decile": json.dumps({"0": 0.8, "5": 0.5 + 0.02 * j, "10": 0.9})}
                 for j, c in enumerate(conditions) for i, x in enumerate(latents)]
    append_results(run_dir, "study_scores", rows)
    sid = uuid.uuid4().hex
    head = {"study_id": sid, "basis": "decoder", "family": "resid_post sae", "set_a": hookpoint, "set_b": hookpoint}
    append_results(run_dir, "overlap_pairs", [{**head, "latent_a": x, "latent_b": x, "similarity": 1.0,
                                               "decoder_partner": True} for x in latents])
    append_results(run_dir, "overlap_summary", [{**head, "n": len(latents), "matched_mean": 1.0, "matched_lo": 1.0,
                                                 "matched_hi": 1.0, "baseline": "shuffled coordinates",
                                                 "baseline_mean": 0.2, "baseline_lo": 0.19, "baseline_hi": 0.21,
                                                 "random_pair_mean": 0.0}])


@pytest.fixture(scope="session")
def e2e_data(tmp_path_factory, smollm2) -> E2EData:
    """A small real run (SmolLM2 + demo SAE, ~30k tokens of Wikipedia plus hostile HTML documents)
    with fixture explanations and scores on a few latents."""
    return build_e2e_data(tmp_path_factory.mktemp("e2e-data"), smollm2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-server") / "streamlit.log"


@pytest.fixture(scope="session")
def app_server(e2e_data, server_log):
    """The real `streamlit run app.py` over the e2e data folder; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "AUTOINTERP_DATA": str(e2e_data.data_dir), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # No file watcher: engineers editing app.py or pages/ during a run must not rerun the app under test.
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(server_log, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{server_log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200 and r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 60 s:\n{server_log.read_text()[-4000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install -y chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _streamlit_subpage_probe(url: str) -> bool:
    """Opening a page's own URL (/Browse) makes Streamlit's frontend probe /Browse/_stcore/health and
    /Browse/_stcore/host-config before the root's; those two 404s are Streamlit's, not the app's
    (streamlit/streamlit#7074), so they alone are not counted as console errors."""
    path = urllib.parse.urlsplit(url).path
    return path.count("/") == 3 and path.endswith(("/_stcore/health", "/_stcore/host-config"))


@pytest.fixture
def page(browser, request, server_log):
    """A fresh browser page; fails the test on any page error, console error or shown exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(RUN_COUNTER_JS)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text} @ {msg.location}")
          if msg.type == "error" and not _streamlit_subpage_probe(msg.location.get("url", "")) else None)
    yield pg
    if not pg.is_closed():
        errors += [f"Python exception shown: {e}" for e in pg.evaluate(EXCEPTIONS_JS)]
    context.close()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if (failed or errors) and server_log.exists():
        print(f"--- streamlit log (tail) ---\n{server_log.read_text()[-6000:]}", file=sys.stderr)
    assert not errors, "browser reported errors:\n" + "\n".join(errors)


def _screenshot(pg, name: str) -> Path | None:
    """docs/screenshots/<name>.png of the whole app when AUTOINTERP_SCREENSHOTS=1. Streamlit scrolls
    inside its main container, so the viewport is stretched to the content's height first (at most
    SCREENSHOT_MAX_HEIGHT px). The focused widget is blurred first (no focus ring in the picture) and
    the PNG is reduced to a 256-colour palette, which keeps a long page well under 400 KB."""
    if os.environ.get("AUTOINTERP_SCREENSHOTS") != "1":
        return None
    import io

    from PIL import Image

    out = ROOT / "docs" / "screenshots" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    size = pg.viewport_size
    pg.evaluate("() => document.activeElement?.blur()")
    height = pg.evaluate("""() => Math.max(document.body.scrollHeight, ...['stMain', 'stSidebarContent'].map(
        id => document.querySelector(`[data-testid="${id}"]`)?.scrollHeight || 0))""")
    pg.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), SCREENSHOT_MAX_HEIGHT)})
    try:
        pg.evaluate(TWO_FRAMES_JS)  # let the data grid repaint at the new size
        png = pg.screenshot()
    finally:
        pg.set_viewport_size(size)
    with Image.open(io.BytesIO(png)) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


@pytest.fixture
def screenshot():
    return _screenshot


class AppPage:
    """The app in a browser page, with waits that follow Streamlit's script runs."""

    def __init__(self, page, url: str):
        self.page, self.url = page, url

    def _runs(self) -> int:
        return self.page.evaluate("window.__stRuns || 0")

    def _settle(self, after: int, timeout: float, what: str) -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(SETTLED_JS, arg=after, timeout=timeout)
        except PlaywrightTimeout:
            state = self.page.evaluate(STATE_JS)
            raise AssertionError(f"{what}: no finished script run after {after} within {timeout / 1000:.0f} s; "
                                 f"page state {state}") from None
        shown = self.page.evaluate(EXCEPTIONS_JS)
        assert not shown, f"{what}: the page shows a Python exception:\n" + "\n".join(shown)

    def open(self, path: str = "", timeout: float = 60_000) -> AppPage:
        self.page.goto(self.url + "/" + path.lstrip("/"))
        self._settle(0, timeout, f"open {path!r}")
        return self

    def rerun(self, action, timeout: float = 60_000) -> AppPage:
        """Do `action()` (a widget change) and wait until the script run it starts has finished."""
        before = self._runs()
        action()
        self._settle(before, timeout, "rerun")
        return self

    def set_number(self, label: str, value: int) -> AppPage:
        box = self.page.get_by_label(label, exact=True)
        return self.rerun(lambda: (box.fill(str(value)), box.press("Enter")))

    def set_text(self, label: str, value: str) -> AppPage:
        box = self.page.get_by_label(label, exact=True)
        return self.rerun(lambda: (box.fill(value), box.press("Enter")))

    def select(self, label: str, option: str) -> AppPage:
        """Pick `option` in the selectbox labelled `label` (it must not be the current choice)."""
        self.page.get_by_role("combobox", name=label, exact=True).click()
        return self.rerun(lambda: self.page.get_by_role("option", name=option, exact=True).click())

    def table(self, n: int = 0, timeout: float = 30_000):
        """The rows st.dataframe number `n` has rendered (its grid draws only the rows and columns in
        view) as a DataFrame of strings, read from the grid's accessible table once it is whole: every
        row has as many cells as there are headers (one more header where a row-selection column is
        shown, which is left out) and two successive animation frames read the same (GRID_JS). A grid
        that is still drawing (2 headers for 8 cells on a slow machine) is never read."""
        import pandas as pd
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            got = self.page.wait_for_function(GRID_JS, arg=n, timeout=timeout, polling="raf").json_value()
        except PlaywrightTimeout:
            raise AssertionError(f"data grid {n} not drawn whole within {timeout / 1000:.0f} s; page state "
                                 f"{self.page.evaluate(STATE_JS)}") from None
        return pd.DataFrame(got["rows"], columns=got["head"])

    def download(self, button, folder: Path) -> Path:
        """Click a download button (a Locator) and save what the browser downloads into `folder`."""
        with self.page.expect_download() as info:
            button.click()
        out = folder / info.value.suggested_filename
        info.value.save_as(out)
        return out

    def screenshot(self, name: str) -> Path | None:
        return _screenshot(self.page, name)


@pytest.fixture
def app(page, app_server) -> AppPage:
    return AppPage(page, app_server)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.slow)

