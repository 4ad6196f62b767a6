"""The Ray Serve application: the FastAPI job API and the classifier endpoint.

`service.app:build_app(args)` composes the ingress (`service.ingress`) and the classifier
deployment (`service.classifier_deployment`); the logic lives in plain objects
(`api`, `job_service`, `store`, `launcher`, `classifiers`, `auth`) tested without Ray.
"""
