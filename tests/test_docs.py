"""The README stays true: its config reference is the code's, and it opens with the two commands."""

from pathlib import Path

from saeinverse.config.docs import config_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_holds_the_current_config_reference():
    assert config_reference() in README.read_text(), (
        "run: saeinverse config keys, paste into README"
    )


def test_readme_opens_with_the_two_setup_commands():
    lines = [line for line in README.read_text().splitlines() if line.strip()]
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == ["make run", "make test"]
