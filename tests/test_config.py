import pytest

from saeinverse import get_default_config, update_config
from saeinverse.config import (
    DataConfig,
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
