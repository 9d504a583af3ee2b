"""The Python API: `from seqed import ...`, the README's three-line snippet run as written, and the one
decoding front over both engines (`SearchSettings`, per-call settings, `source_pieces`)."""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from tiny_runs import write_config, write_task  # noqa: E402

from seqed.config import SearchConfig, load_config  # noqa: E402
from seqed.decoding import SearchSettings  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny reversal model trained for 60 steps, in ROOT/runs/demo (where the README's snippet looks)."""
    from seqed.train import train

    root = tmp_path_factory.mktemp("api")
    task = write_task(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(write_config(root / "cfg.yaml", task, root / "runs" / "demo",
                                       train="max_steps: 60, valid_every: 60")), progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def test_readme_snippet_runs_as_written(run, monkeypatch, one_thread):
    snippet = readme_snippet()
    assert len(snippet.strip().splitlines()) == 3
    monkeypatch.chdir(run)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {})
    printed = eval(out.getvalue())  # noqa: S307 (our own print of a list of strings)
    assert isinstance(printed, list) and len(printed) == 1 and isinstance(printed[0], str)


def test_both_engines_through_one_interface(run, tmp_path, one_thread):
    pytest.importorskip("ctranslate2")
    from seqed import Translator
    from seqed.export import export_ctranslate2

    lines = ["a b c d", "", "e f g", "  ", "k l a b c"]
    ours = Translator.from_checkpoint(run / "runs" / "demo", beam=1, device="cpu")
    exported = export_ctranslate2(run / "runs" / "demo", tmp_path / "ct2")
    theirs = Translator.from_checkpoint(exported, engine="ctranslate2", beam=1, quantization="float32", threads=1)
    assert ours.translate_lines(lines) == theirs.translate_lines(lines)  # greedy: identical outputs
    assert ours.translate_lines(lines)[1] == "" and ours.translate_lines(lines)[3] == ""
    assert ours.source_pieces(lines) == theirs.source_pieces(lines) == [len(x) for x in
                                                                         ours.tokenizer.encode_src(lines)]
    assert ours.settings.max_src_len == theirs.settings.max_src_len  # the model's limit, both ways
    with pytest.raises(ValueError, match="alignments are for engine seqed"):
        theirs.translate(lines, SearchSettings(beam=2, alignment=True))
    with pytest.raises(ValueError, match="alignments are for engine seqed"):
        Translator.from_checkpoint(exported, engine="ctranslate2", alignment=True)
    aligned = ours.translate(["a b c"], SearchSettings(beam=2, alignment=True))[0][0]
    assert aligned.alignment is not None and aligned.tokens


def test_per_call_settings_match_a_translator_built_with_them(run, one_thread):
    from seqed import load_translator

    lines = ["a b c d e", "f g h", "i j k l a b"]
    default = load_translator(run / "runs" / "demo", device="cpu")
    assert default.settings.beam == 5 and default.settings.nbest == 1  # the checkpoint's search section
    built = load_translator(run / "runs" / "demo", device="cpu", beam=3, nbest=2, length_penalty=0.0)
    per_call = default.translate(lines, SearchSettings(beam=3, nbest=2, length_penalty=0.0))
    view = default.with_settings(beam=3, nbest=2, length_penalty=0.0)
    assert view.model is default.model and default.settings.beam == 5
    for a, b, c in zip(built.translate(lines), per_call, view.translate(lines)):
        assert [h.tokens for h in a] == [h.tokens for h in b] == [h.tokens for h in c] and len(a) == 2
    # unset limits of a per-call settings object are the model's
    assert default._resolve(SearchSettings(beam=1)).max_src_len == default.settings.max_src_len


def test_search_settings_hold_the_search_section_with_its_defaults():
    import dataclasses

    section = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    settings = {f.name: f.default for f in dataclasses.fields(SearchSettings)}
    assert section == {k: settings[k] for k in section}


def test_search_settings_merge_section_overrides_and_limits():
    section = SearchConfig(beam=4, length_penalty=1.5, max_len_a=1.0, max_len_b=3, min_len=0, batch_size=8)
    s = SearchSettings.from_config(section, beam=None, nbest=2, max_src_len=40, max_len_cap=30)
    assert (s.beam, s.nbest, s.length_penalty, s.max_len_b, s.batch_size) == (4, 2, 1.5, 3, 8)
    assert (s.max_src_len, s.max_len_cap) == (40, 30)
    assert SearchSettings.from_config({"beam": 2, "unknown": 1}, beam_size=3).beam == 3  # an export's dict
    assert SearchSettings.from_config(None, max_src_len=2000) == SearchSettings(max_src_len=2000)
    assert SearchSettings(max_src_len=500).within(40, None).max_src_len == 40
    assert SearchSettings(max_src_len=20).within(40, None).max_src_len == 20
    for bad, match in (({"beam": 0}, "beam must be positive"), ({"beam": 2, "nbest": 3}, "nbest must be"),
                       ({"temperature": 0.5}, "sampling only"), ({"sampling": "nucleus"}, "topk=K"),
                       ({"max_src_len": 1}, "max_src_len")):
        with pytest.raises(ValueError, match=match):
            SearchSettings(**bad)
    with pytest.raises(TypeError):
        SearchSettings().replace(beams=None)
    assert SearchSettings(beam=2).key() != SearchSettings(beam=3).key()


def test_import_seqed_is_cheap_and_train_stays_the_function():
    code = ("import sys, seqed; assert 'torch' not in sys.modules, 'import seqed imported torch'; "
            "from seqed.train import Trainer; from seqed import train, Config, Translator, load_model; "
            "assert callable(train) and train.__module__ == 'seqed.train', train; "
            "assert Config.__name__ == 'Config' and Translator.__name__ == 'Translator'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
