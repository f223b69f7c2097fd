"""Every `python` block of python/README.md runs as written, from the repository's root."""

import os
import re

import pytest

from conftest import REPO, have_tensorflow

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "python" / "README.md").read_text(), re.S)


def test_the_readme_has_its_snippets():
    assert len(BLOCKS) == 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, monkeypatch):
    code = BLOCKS[index]
    if "tensorflow" in code and not have_tensorflow():
        pytest.skip("TensorFlow is not importable")
    monkeypatch.chdir(REPO)
    exec(compile(code, "python/README.md block {}".format(index), "exec"), {"__name__": "__readme__"})
