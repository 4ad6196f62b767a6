"""The app with default settings, for `serve build` (which needs an Application object).

Only `python -m service.serve_config` imports this; deployments use
`service.app:build_app` with `args` (see service/serve_config.yaml).
"""

from service.app import build_app

app = build_app({})
