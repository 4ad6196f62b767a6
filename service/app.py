"""The Serve application builder: `serve build service.app:build_app` and `presafe up`.

    from service.app import build_app
    serve.run(build_app({"storage_path": "/mnt/presafe", "tokens_file": "tokens.yaml"}))

`args` are `service.settings.ServiceSettings` fields; they are checked here, on the
machine that deploys, so a typo fails the deploy instead of every replica.
"""

from __future__ import annotations

from ray.serve import Application

from service.classifier_deployment import Classifier
from service.ingress import Ingress
from service.settings import ServiceSettings


def build_app(args: dict) -> Application:
    settings = ServiceSettings.model_validate(args or {})
    classifier = Classifier.bind(torch_threads=settings.classifier_torch_threads)
    return Ingress.bind(classifier, settings.model_dump(mode="json"))
