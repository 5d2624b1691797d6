"""Property tests of config input: nested overrides dicts, CLI ``key=value`` strings and YAML files.

Whatever comes in, the outcome is a valid config (every range holds, it round-trips through YAML)
or one ConfigError line / exit 2 with one ``saeinverse: error:`` line; never a traceback.
SAEINVERSE_FAULTS_FULL=1 tries 10× more examples.
"""

from __future__ import annotations

import contextlib
import io
import types
import typing

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saeinverse.cli import main
from saeinverse.config import (
    Config,
    Section,
    check_ranges,
    config_from_dict,
    dump_config,
    get_default_config,
    load_config,
    parse_overrides,
    update_config,
)
from saeinverse.errors import ConfigError
from tests.faults import harness

EXAMPLES = 2000 if harness.full_campaign() else 200
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run (seeded); failures reproduce
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _leaves(section: Section, prefix: str = "") -> dict[str, typing.Any]:
    """Dotted key → type hint of every leaf, and section paths → the section type."""
    hints = typing.get_type_hints(type(section))
    found: dict[str, typing.Any] = {}
    for name in section._field_names():
        key = f"{prefix}.{name}" if prefix else name
        value = getattr(section, name)
        found[key] = hints[name]
        if isinstance(value, Section):
            found |= _leaves(value, key)
    return found


HINTS = _leaves(get_default_config())
KEYS = sorted(HINTS)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64]),  # beyond float64 / int64
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


def typed(hint: typing.Any) -> st.SearchStrategy:
    """Values near the field's type: mostly plausible, some just outside the valid range."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(typed(a) for a in args))
    if origin is typing.Literal:
        return st.sampled_from([*args, "bogus"])
    if origin is list:
        return st.lists(typed(args[0]), max_size=4)
    if hint is type(None):
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=-3, max_value=5000)
    if hint is float:
        return st.floats(min_value=-1.0, max_value=2.0) | st.sampled_from([0.0, 1.0, 1e-4])
    if hint is str:
        return st.text(max_size=12)
    if isinstance(hint, type) and issubclass(hint, Section):
        return st.just({})
    return anything


def _set(tree: dict, key: str, value: typing.Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return  # an earlier draw put a value where this key's section would be
        node = child
    node[last] = value


@st.composite
def overrides(draw) -> dict:
    """A nested overrides dict: real keys with typed or arbitrary values, some unknown keys."""
    tree: dict = {}
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if draw(st.integers(0, 9)) == 0:
            key = draw(st.text(min_size=1, max_size=10))
            tree[key] = draw(anything)
            continue
        key = draw(st.sampled_from(KEYS))
        value = draw(typed(HINTS[key]) if draw(st.integers(0, 3)) else anything)
        _set(tree, key, value)
    return tree


def _valid(config: Config) -> None:
    check_ranges(config)
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


@SETTINGS
@given(overrides())
def test_nested_overrides_give_a_valid_config_or_one_config_error_line(tree):
    harness.CAMPAIGN["hypothesis: nested overrides dicts"] += 1
    try:
        config = update_config(get_default_config(), tree)
    except ConfigError as err:
        _one_line(str(err))
        return
    _valid(config)


yaml_text = st.one_of(
    st.text(max_size=20),
    anything.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    st.sampled_from(
        ["{a: 1", "[1,", "@x", ": :", "'", "!!python/object:os.system", "1e999", "- 1"]
    ),
)


@st.composite
def cli_items(draw) -> list[str]:
    items = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.integers(0, 9))
        if kind == 0:  # anything at all (argparse options excluded: not KEY=VALUE items)
            item = draw(st.text(min_size=1, max_size=20).filter(lambda s: not s.startswith("-")))
        else:
            key = draw(st.sampled_from(KEYS)) if kind > 1 else draw(st.text(max_size=10))
            value = draw(typed(HINTS[key])) if kind > 4 and key in HINTS else None
            raw = yaml.safe_dump(value).strip().removesuffix("...").strip() if kind > 4 else None
            item = f"{key}={raw if raw is not None else draw(yaml_text)}"
            if item.startswith("-"):
                continue
        items.append(item)
    return items


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check_cli(code: int, out: str, err: str) -> Config | None:
    if code == 2:
        assert err.startswith("saeinverse: error: ") and err.count("\n") == 1, err
        _one_line(err.rstrip("\n"))
        return None
    assert code == 0, err
    config = config_from_dict(yaml.safe_load(out))
    _valid(config)
    return config


@SETTINGS
@given(cli_items())
def test_cli_key_value_items_give_a_config_or_one_error_line(items):
    harness.CAMPAIGN["hypothesis: CLI key=value items"] += 1
    code, out, err = _cli(["config", "show", *items])
    shown = _check_cli(code, out, err)
    if shown is not None:
        assert shown == update_config(get_default_config(), parse_overrides(items))


yaml_files = st.one_of(
    overrides().map(lambda tree: yaml.safe_dump(tree, allow_unicode=True)),
    st.text(max_size=60),
    st.tuples(overrides(), st.text(max_size=4), st.integers(0, 200)).map(
        lambda t: _splice(yaml.safe_dump(t[0]), t[1], t[2])
    ),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


def _splice(text: str, insert: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + insert + text[at:]


@SETTINGS
@given(content=yaml_files, as_bytes=st.booleans())
def test_yaml_files_give_a_config_or_one_error_line(tmp_path_factory, content, as_bytes):
    harness.CAMPAIGN["hypothesis: YAML config files"] += 1
    path = tmp_path_factory.mktemp("yaml", numbered=True) / "config.yaml"
    if as_bytes:
        path.write_bytes(content.encode("utf-8", "surrogatepass")[::-1])  # often not UTF-8
    else:
        path.write_text(content, encoding="utf-8")
    try:
        loaded = load_config(path)
    except ConfigError as err:
        _one_line(str(err))
        loaded = None
    code, out, err = _cli(["config", "show", "--config", str(path)])
    shown = _check_cli(code, out, err)
    assert (shown is None) == (loaded is None) and shown == loaded
