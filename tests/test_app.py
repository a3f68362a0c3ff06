"""The app's page logic through streamlit.testing.v1.AppTest on a real (tiny) run."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from autointerp.render import example_html
from autointerp.store import Example, RunStore

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture
def app(tiny_run, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_DATA", str(tiny_run.parent.parent))
    return AppTest.from_file(str(APP), default_timeout=60)


def test_app_lists_hookpoints_and_latents_from_the_store(app, tiny_run):
    app.run()
    assert not app.exception, app.exception
    assert app.sidebar.selectbox[1].options == ["mlp_neurons.1-topk4", "resid_post.2"]
    app.sidebar.selectbox[1].select("resid_post.2").run()
    table = app.dataframe[0].value
    store = RunStore(tiny_run)
    expected, total = store.latent_table("resid_post.2", sort="frequency", limit=50)
    assert list(table.latent) == list(expected.latent) and total == 256
    assert {"frequency", "max_act"} <= set(table.columns)
    # the first latent's top examples are shown, highlighted
    bodies = [el.proto.body for el in app.get("html")]
    assert bodies and bodies[0].count('class="ai-example"') == len(store.top_examples("resid_post.2",
                                                                                    int(expected.latent[0]), n=10))
    assert "ai-act" in bodies[0]


def test_app_pages_through_latents(app, tiny_run):
    app.run()
    app.sidebar.selectbox[1].select("resid_post.2").run()
    first = list(app.dataframe[0].value.latent)
    app.sidebar.number_input[0].set_value(2).run()
    second = list(app.dataframe[0].value.latent)
    assert len(second) == 50 and not set(first) & set(second)


def test_app_with_no_runs_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert "make app" in at.info[0].value


def test_example_html_escapes_corpus_text():
    ex = Example(0, 1, [1, 2, 3], ["<script>alert(1)</script>", '<img src=x onerror="boom()">', " ok"],
                 [2.0, 0.0, 1.0])
    out = example_html(ex)
    assert "<script>" not in out and "<img" not in out
    assert "&lt;script&gt;" in out and "&lt;img src=x onerror=&quot;boom()&quot;&gt;" in out
    assert 'title="2.000"' in out and "rgba(255,120,0,0.50)" in out


def test_app_shows_a_latents_explanation_and_scores(tmp_path, tiny_run, monkeypatch):
    import shutil

    from autointerp.store import append_results

    run = tmp_path / "data" / "runs" / "tiny"
    shutil.copytree(tiny_run, run)
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path / "data"))
    page, _ = RunStore(run).latent_table("resid_post.2", limit=1)
    latent = int(page.latent[0])
    append_results(run, "explanations", [{"hookpoint": "resid_post.2", "latent": latent, "model": "m",
                                          "explanation": "<b>years</b> and *dates*"}])
    append_results(run, "scores", [{"hookpoint": "resid_post.2", "latent": latent, "scorer": "detection",
                                    "score_id": "s1", "auroc": 0.81, "n": 20, "n_failed": 3}])
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.sidebar.selectbox[1].select("resid_post.2").run()
    assert not at.exception
    assert at.text[0].value == "<b>years</b> and *dates*"  # shown verbatim, never rendered
    shown = at.dataframe[1].value
    assert shown.auroc.iloc[0] == 0.81 and shown.n_failed.iloc[0] == 3
