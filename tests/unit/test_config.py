"""Configuration: validation errors and the Serve config it produces."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from serve.catalog import CATALOG
from serve.config import AppConfig, ServeConfig
from serve.deployments import model_deployment_options


def test_local_config_validates_and_becomes_a_valid_serve_config():
    config = ServeConfig.from_file("configs/local.yaml")
    schema = ServeDeploySchema.model_validate(config.to_serve_deploy())
    assert schema.applications[0].import_path == "serve.deployments:build_app"
    assert {m.name for m in config.app.models} == set(CATALOG)  # the embedded default serves them all


@pytest.mark.parametrize(
    "path", ["configs/local.yaml", "configs/production-gpu.yaml", "configs/k8s-cpu-dev.yaml"]
)
def test_the_serve_config_builds_through_rays_own_import_path_route(path):
    # What `serve run` / `serve deploy` / KubeRay do with the file: import the builder by its path and
    # call it through Ray's builder check (one parameter, the args dict).
    from ray._common.utils import import_attr
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    (application,) = ServeConfig.from_file(path).to_serve_deploy()["applications"]
    builder = import_attr(application["import_path"])
    app = call_user_app_builder_with_args_if_necessary(builder, application["args"])
    assert isinstance(app, Application)


def test_unknown_model_is_rejected_with_the_known_names():
    with pytest.raises(ValidationError, match=r"unknown model 'sora'.*svd"):
        AppConfig.model_validate({"models": [{"name": "sora"}]})


def test_models_listed_twice_are_rejected():
    with pytest.raises(ValidationError, match="listed twice: svd"):
        AppConfig.model_validate({"models": [{"name": "svd"}, {"name": "svd"}]})


def test_autoscaling_bounds_must_be_ordered():
    with pytest.raises(ValidationError, match="min_replicas 3 exceeds max_replicas 2"):
        AppConfig.model_validate(
            {"models": [{"name": "svd", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}]}
        )


def test_deployment_options_carry_autoscaling_and_resources():
    model = AppConfig.model_validate(
        {
            "models": [
                {"name": "svd", "num_gpus": 1, "max_queued_requests": 3, "autoscaling": {"max_replicas": 4}}
            ]
        }
    ).models[0]
    options = model_deployment_options(model)
    assert options["name"] == "Model_svd"
    assert options["max_queued_requests"] == 4 * 1 + 3  # never below the Router's exact admission limit
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["autoscaling_config"]["target_ongoing_requests"] == 1.0


@pytest.mark.parametrize("initial", [0, 3])
def test_initial_replicas_must_lie_between_min_and_max(initial: int) -> None:
    with pytest.raises(ValueError, match="initial_replicas"):
        AppConfig.model_validate(
            {
                "models": [
                    {
                        "name": "svd",
                        "autoscaling": {"min_replicas": 1, "max_replicas": 2, "initial_replicas": initial},
                    }
                ]
            }
        )


def test_autoscaling_options_are_valid_for_serve_including_scale_to_zero() -> None:
    from ray.serve.config import AutoscalingConfig

    config = AppConfig.model_validate(
        {"models": [{"name": "svd", "autoscaling": {"min_replicas": 0, "downscale_to_zero_delay_s": 120.0}}]}
    )
    serve_config = AutoscalingConfig(**model_deployment_options(config.models[0])["autoscaling_config"])
    assert serve_config.min_replicas == 0 and serve_config.downscale_to_zero_delay_s == 120.0
    assert serve_config.target_ongoing_requests == 1.0 and serve_config.downscale_delay_s == 600.0


def test_a_step_cache_policy_the_model_lacks_is_refused_and_tiny_weights_default_to_none():
    with pytest.raises(ValidationError, match=r"cache\.policy first_block is not one svd supports"):
        AppConfig.model_validate({"models": [{"name": "svd", "cache": {"policy": "first_block"}}]})
    app = AppConfig.model_validate({"models": [{"name": "hunyuanvideo"}]})
    assert app.models[0].default_cache().policy == "off"  # tiny: random weights, every step differs
    real = AppConfig.model_validate({"models": [{"name": "hunyuanvideo", "weights": "hub"}]}).models[0]
    assert real.default_cache().policy == "first_block" and real.default_cache().threshold == 0.06


@pytest.mark.parametrize(
    ("model", "parallel", "message"),
    [
        (
            "svd",
            {"ulysses_degree": 2},
            "svd has no sequence-parallel transformer in xDiT; models that can span",
        ),
        ("wan2.1-t2v-14b", {"cfg_degree": 2}, "cfg_degree=2 splits HunyuanVideo's true-CFG branches"),
    ],
)
def test_parallel_is_refused_at_configuration_for_models_xdit_cannot_split(model, parallel, message):
    with pytest.raises(ValidationError, match=message):
        AppConfig.model_validate({"models": [{"name": model, "parallel": parallel}]})
    assert AppConfig.model_validate(
        {"models": [{"name": "wan2.2-t2v-a14b", "parallel": {"ulysses_degree": 2}}]}
    )
