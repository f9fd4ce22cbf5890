"""The README's configuration example is valid configuration."""

from __future__ import annotations

import re
from pathlib import Path

from chatd.config import load_settings

README = Path(__file__).parent.parent / "README.md"


def test_readme_toml_example_loads(tmp_path: Path) -> None:
    """Every ```toml block in the README loads without a config error."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        path = tmp_path / "chatd.toml"
        path.write_text(block)
        settings = load_settings(path, env={})
        assert settings.tools.http[0].name == "order_status"
