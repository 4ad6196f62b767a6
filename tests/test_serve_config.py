"""service/serve_config.yaml: valid for Serve, current with the builder, args accepted."""

import yaml

from service.serve_config import PATH, generate


def test_serve_config_is_valid_current_and_matches_the_builder():
    from ray.serve.schema import ServeDeploySchema

    from service.app import build_app
    from service.settings import ServiceSettings

    text = PATH.read_text()
    assert text == generate(), "service/serve_config.yaml is stale: run `python -m service.serve_config`"
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    (app,) = schema.applications
    assert app.import_path == "service.app:build_app" and app.route_prefix == "/"
    ServiceSettings.model_validate(app.args)  # the operator's args are settings fields
    built = build_app(app.args)  # and the builder takes them
    names = {built._bound_deployment.name, *(a._bound_deployment.name for a in built._bound_deployment.init_args
                                             if hasattr(a, "_bound_deployment"))}
    by_name = {d.name: d for d in app.deployments}
    assert set(by_name) == names == {"Ingress", "Classifier"}
    clf = by_name["Classifier"]
    assert clf.autoscaling_config["max_replicas"] >= 2 and clf.ray_actor_options.num_cpus == 0.5
    assert by_name["Ingress"].ray_actor_options.num_cpus == 0
