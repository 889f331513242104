"""README stays true: its model table is the registry's."""
import re
from pathlib import Path

from clzoo._registry import list_entries
from clzoo.cli import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_is_current():
    text = README.read_text()
    table = re.search(r"<!-- model-table:start -->\n(.*?)\n<!-- model-table:end -->", text, re.S).group(1)
    assert table.strip() == markdown_table(list_entries()).strip(), "run `clzoo list --markdown` into README.md"


def test_readme_quick_start_has_two_setup_commands():
    text = README.read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ['pip install -e ".[dev]" -c constraints.txt', "pytest -q"]
