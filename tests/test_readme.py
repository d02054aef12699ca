"""The README's Python blocks run verbatim, in order, in one namespace (as a reader pastes them)."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # pymanopt's checks draw their plots


def test_readme_code_blocks_run_verbatim():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    assert namespace["result"] is not None
