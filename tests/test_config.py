import pytest

from saeinverse import get_default_config, update_config
from saeinverse.config import (
    DataConfig,
    Section,
    dump_config,
    field_docs,
    load_config,
    parse_overrides,
)
from saeinverse.errors import ConfigError


def test_sections_read_as_dict_and_attribute():
    config = get_default_config()
    assert config["data"]["n_prompts"] == config.data.n_prompts == 500
    assert config["data"]["filtering"]["sparsity_min"] == config.data.filtering.sparsity_min
    assert dict(**config["optimization"])["lr"] == config.optimization.lr


def test_update_is_a_validated_deep_merge_returning_a_new_config():
    config = get_default_config()
    merged = update_config(config, {"data": {"n_prompts": 7, "filtering": {"sparsity_max": 1}}})
    assert merged.data.n_prompts == 7
    assert merged.data.filtering.sparsity_max == 1.0 and isinstance(
        merged.data.filtering.sparsity_max, float
    )
    assert merged.data.filtering.sparsity_min == config.data.filtering.sparsity_min
    assert config.data.n_prompts == 500, "the input config must not change"
    assert merged.model == config.model


def test_update_of_a_section_alone():
    data = update_config(get_default_config()["data"], {"n_prompts": 3})
    assert isinstance(data, DataConfig) and data.n_prompts == 3


def test_unknown_key_names_it_lists_valid_keys_and_suggests_closest():
    with pytest.raises(ConfigError) as err:
        update_config(get_default_config(), {"data": {"n_promts": 5}})
    message = str(err.value)
    assert "'n_promts'" in message and "in data" in message
    assert "max_length" in message and "did you mean 'n_prompts'" in message
    with pytest.raises(
        ConfigError, match="unknown config key 'clusterin'.*did you mean 'clustering'"
    ):
        update_config(get_default_config(), {"clusterin": {}})
    with pytest.raises(ConfigError, match="unknown config key 'x'"):
        get_default_config()["data"]["x"]


@pytest.mark.parametrize(
    ("overrides", "path", "expected"),
    [
        ({"data": {"n_prompts": "many"}}, "data.n_prompts", "int"),
        ({"data": {"n_prompts": True}}, "data.n_prompts", "int"),
        ({"hardware": {"device": "tpu"}}, "hardware.device", "one of 'auto', 'cpu', 'cuda'"),
        (
            {"clustering": {"selection": {"feature_ids": [1, "a"]}}},
            "clustering.selection.feature_ids",
            "list of int",
        ),
        ({"data": {"filtering": 3}}, "data.filtering", "section"),
    ],
)
def test_wrong_type_names_key_path_and_expected_type(overrides, path, expected):
    with pytest.raises(ConfigError) as err:
        update_config(get_default_config(), overrides)
    assert path in str(err.value) and expected in str(err.value)


def test_optional_values_accept_null_and_values():
    config = update_config(
        get_default_config(), {"clustering": {"dbscan": {"eps": 0.3}}, "sae": {"path": None}}
    )
    assert config.clustering.dbscan.eps == 0.3 and config.sae.path is None


def test_yaml_round_trip(tmp_path):
    config = update_config(
        get_default_config(), {"seed": 3, "clustering": {"selection": {"feature_ids": [4, 2]}}}
    )
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_partial_yaml_keeps_defaults_and_bad_yaml_is_clear(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  n_prompts: 12\n")
    config = load_config(path)
    assert (
        config.data.n_prompts == 12
        and config.data.max_length == get_default_config().data.max_length
    )
    path.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_dotted_overrides():
    nested = parse_overrides(
        ["data.n_prompts=200", "seed=3", "sae.path=null", "clustering.selection.feature_ids=[1, 2]"]
    )
    assert nested == {
        "data": {"n_prompts": 200},
        "seed": 3,
        "sae": {"path": None},
        "clustering": {"selection": {"feature_ids": [1, 2]}},
    }
    config = update_config(get_default_config(), nested)
    assert config.clustering.selection.feature_ids == [1, 2]
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["data.n_prompts"])


def test_every_field_is_documented():
    from saeinverse import config as module

    sections = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, module.Section) and obj is not module.Section
    ]
    for section in sections:
        docs = field_docs(section)
        missing = [name for name in section._field_names() if name not in docs]
        assert not missing, f"{section.__name__} fields without docs: {missing}"


def test_sections_are_read_only():
    with pytest.raises(TypeError, match="update_config"):
        get_default_config()["data"]["n_prompts"] = 3


# ----------------------------------------------------------------------------- the flat form


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("n_prompts", "data.n_prompts", 50),
        ("max_steps", "optimization.max_steps", 100),
        ("visualize_clusters", "clustering.visualize_clusters", False),
        ("entropy_threshold_low", "data.filtering.entropy_threshold_low", 0.3),
        ("features_per_cluster", "clustering.selection.features_per_cluster", 4),
        ("use_cached_data", "data.use_cached_data", False),
        ("hook_name", "sae.train.hook_name", "blocks.3.hook_resid_post"),
    ],
)
def test_a_unique_setting_name_sets_that_setting(name, path, value):
    config = update_config(get_default_config(), {name: value})
    assert _get(config, path) == value
    assert config == update_config(get_default_config(), _nested(path, value))


def test_every_unique_setting_name_is_its_nested_form():
    default = get_default_config()
    by_name: dict[str, list[str]] = {}
    for path in _setting_paths(default):
        by_name.setdefault(path.rpartition(".")[2], []).append(path)
    unique = {name: paths[0] for name, paths in by_name.items() if len(paths) == 1}
    assert len(unique) > 90
    for name, path in unique.items():
        flat = update_config(default, {name: _get(default, path)})
        assert flat == update_config(default, _nested(path, _get(default, path))), name


def test_flat_values_are_coerced_and_checked_as_nested_ones():
    config = update_config(get_default_config(), {"entropy_threshold_low": 0})
    low = config.data.filtering.entropy_threshold_low
    assert low == 0.0 and isinstance(low, float)
    with pytest.raises(ConfigError, match=r"data\.n_prompts expects int"):
        update_config(get_default_config(), {"n_prompts": "many"})
    with pytest.raises(ConfigError, match=r"data\.filtering\.entropy_threshold_low must be in"):
        update_config(get_default_config(), {"entropy_threshold_low": 2})
    with pytest.raises(ConfigError, match=r"entropy_threshold_low \(0\.9\) must not exceed"):
        update_config(
            get_default_config(),
            {"entropy_threshold_low": 0.9, "data": {"filtering": {"entropy_threshold_high": 0.5}}},
        )


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        ("batch_size", ["data.batch_size", "explanation.batch_size"]),
        ("context_window", ["data.context_window", "explanation.context_window"]),
        ("lr", ["sae.train.lr", "optimization.lr"]),
        ("min_samples", ["clustering.hdbscan.min_samples", "clustering.dbscan.min_samples"]),
        ("name", ["model.name", "output.name"]),
        ("score", ["clustering.selection.score", "explanation.score"]),
    ],
)
def test_a_shared_setting_name_is_refused_naming_every_path(name, paths):
    with pytest.raises(ConfigError, match=f"config key '{name}' is ambiguous") as err:
        update_config(get_default_config(), {name: 1})
    assert all(path in str(err.value) for path in paths)


def test_the_flat_form_is_relative_to_the_section_updated():
    config = get_default_config()
    assert update_config(config["sae"], {"lr": 1e-4}).train.lr == 1e-4
    assert update_config(config["data"], {"sparsity_max": 0.1}).filtering.sparsity_max == 0.1
    with pytest.raises(ConfigError) as err:
        update_config(config["clustering"], {"min_samples": 3})
    message = str(err.value)
    assert "clustering.hdbscan.min_samples" in message
    assert "clustering.dbscan.min_samples" in message


def test_a_name_of_nothing_is_still_an_unknown_key():
    with pytest.raises(ConfigError) as err:
        update_config(get_default_config(), {"n_promts": 5})
    message = str(err.value)
    assert message.startswith("unknown config key 'n_promts' in <root>; valid keys: seed, ")
    assert "did you mean 'n_prompts' (data.n_prompts)?" in message
    with pytest.raises(ConfigError, match="unknown config key 'zzz' in <root>; valid keys"):
        update_config(get_default_config(), {"zzz": 1})


def test_sections_have_no_flat_form():
    with pytest.raises(ConfigError) as err:
        update_config(get_default_config(), {"filtering": {"sparsity_max": 0.1}})
    assert "unknown config key 'filtering'" in str(err.value)
    assert "the section data.filtering" in str(err.value)


def test_flat_and_nested_keys_mix_and_the_overrides_stay_unchanged():
    overrides = {
        "n_prompts": 50,
        "data": {"max_length": 32, "filtering": {"sparsity_max": 0.1}},
        "entropy_threshold_low": 0.3,
        "optimization": {"lr": 0.1},
        "features_per_cluster": 3,
    }
    config = update_config(get_default_config(), overrides)
    assert config.data.n_prompts == 50 and config.data.max_length == 32
    assert config.data.filtering.sparsity_max == 0.1
    assert config.data.filtering.entropy_threshold_low == 0.3
    assert config.optimization.lr == 0.1
    assert config.clustering.selection.features_per_cluster == 3
    assert overrides["data"] == {"max_length": 32, "filtering": {"sparsity_max": 0.1}}


def test_one_setting_given_flat_and_nested_is_refused_naming_both():
    with pytest.raises(ConfigError) as err:
        update_config(get_default_config(), {"n_prompts": 5, "data": {"n_prompts": 5}})
    assert "'n_prompts' and data.n_prompts both set data.n_prompts" in str(err.value)
    with pytest.raises(ConfigError, match="'n_prompts' and data.n_prompts"):
        update_config(get_default_config(), {"data": get_default_config().data, "n_prompts": 5})
    with pytest.raises(ConfigError, match="data is a section; give it a mapping"):
        update_config(get_default_config(), {"data": 3, "n_prompts": 5})


def test_dotted_overrides_take_the_flat_form_too():
    nested = parse_overrides(["n_prompts=50", "data.max_length=32", "visualize_clusters=false"])
    config = update_config(get_default_config(), nested)
    assert config.data.n_prompts == 50 and config.data.max_length == 32
    assert config.clustering.visualize_clusters is False


def _get(section, path):
    for part in path.split("."):
        section = section[part]
    return section


def _nested(path, value):
    *parents, leaf = path.split(".")
    tree = {leaf: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


def _setting_paths(section, prefix=""):
    for name in section:
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(section[name], Section):
            yield from _setting_paths(section[name], key)
        else:
            yield key
