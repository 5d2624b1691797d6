"""The seed README's "Custom Configuration" example, as it was written, on today's config."""

import yaml

from saeinverse import get_default_config, update_config
from saeinverse.cli import main
from saeinverse.config import config_from_dict


def test_the_seed_custom_configuration_example_runs_as_written():
    config = get_default_config()
    config = update_config(config, {"n_prompts": 50, "max_steps": 100, "visualize_clusters": True})
    assert config.data.n_prompts == 50
    assert config.optimization.max_steps == 100
    assert config.clustering.visualize_clusters is True
    rest = get_default_config().to_dict()
    rest["data"]["n_prompts"], rest["optimization"]["max_steps"] = 50, 100
    assert config.to_dict() == rest, "only the two changed settings differ from the defaults"


def test_the_seed_example_fits_the_inversion_budget():
    from saeinverse.invert.budget import plan_budget

    config = update_config(get_default_config(), {"n_prompts": 50, "max_steps": 100})
    plan = plan_budget(config.optimization)
    assert plan.soft_steps == 100
    assert all(budget and budget > 0 for _, budget in plan.rows)


def test_the_command_line_takes_the_flat_form(capsys):
    assert main(["config", "show", "n_prompts=50", "max_steps=100"]) == 0
    shown = config_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert shown.data.n_prompts == 50 and shown.optimization.max_steps == 100
    assert main(["config", "show", "lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeinverse: error: config key 'lr' is ambiguous")
    assert "sae.train.lr" in err and "optimization.lr" in err
