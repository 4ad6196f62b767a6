"""Which classifiers the service can serve, and a cache of loaded ones (plain objects).

- `ModelRegistry`: the classifiers trained by jobs (`<storage_path>/jobs/<id>/classifier`,
  id = the job id), those of the settings (`model_dirs`: id -> folder) and those registered
  over the API (`register`, POST /v1/models: recorded in the store, servable at once, no
  redeploy), each with the metrics of its `meta.json` and a version (`<id>@<data
  fingerprint>`); resolves a request's model id to a folder. A job's classifier is visible
  to the job's owner (and admins), an API-registered one to the principal that registered
  it; the settings' ones and those an admin promoted are visible to everyone. The default
  is the latest promotion (else the settings' `default_classifier`): it changes only by an
  admin's action, never because a newer job finished.
- `ClassifierPool`: loads a classifier once and keeps it (least recently used out
  first; loaded again when its meta.json changes, so a retrained folder is never served
  stale under a new version), and scores many requests in one forward pass per model: what the Serve
  deployment's `@serve.batch` method calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import OrderedDict
from pathlib import Path

from jobs.classifier.model import META, DecisionClassifier
from jobs.errors import PresafeError
from jobs.stages.signals import CLASSIFIER as JOB_CLASSIFIER
from service.auth import Principal
from service.schemas import Decision, ModelInfo, ModelList, Promotion
from service.settings import ServiceSettings


class UnknownModel(PresafeError):
    pass


class NoClassifier(PresafeError):
    pass


class ClassifierUnavailable(PresafeError):
    """The classifier deployment did not answer (a replica restarting): HTTP 503, retry."""


class ModelRegistry:
    """The classifiers under the storage path's job folders plus the registered ones.
    /v1/classify resolves its model from a listing at most `ttl_s` old (a listing reads
    every job's meta.json: per request it would cost more than the forward pass for a
    service with many jobs); an id that is not in it triggers a fresh listing first (at most
    4 per second), so a job's classifier is servable within moments of the job publishing it.
    `store` (a JobStore) gives owners and promotions; without one every job's classifier is
    everyone's and nothing is promoted (tests of the listing alone)."""

    def __init__(self, settings: ServiceSettings, store=None, ttl_s: float = 2.0):
        self.settings, self.store, self.ttl_s = settings, store, ttl_s
        self._cached: tuple[float, ModelList] | None = None

    def _listing(self, fresh: bool = False) -> ModelList:
        now = time.monotonic()
        age = now - self._cached[0] if self._cached else None
        # a miss re-lists at most 4 times a second, so requests for unknown ids cannot defeat the cache
        if self._cached is None or age > self.ttl_s or (fresh and age > min(0.25, self.ttl_s)):
            self._cached = (now, self._all())
        return self._cached[1]

    def _job_models(self) -> list[tuple[str, Path]]:
        jobs = Path(self.settings.storage_path) / "jobs"
        found = [(d.name, d / JOB_CLASSIFIER) for d in jobs.glob("*") if (d / JOB_CLASSIFIER / META).is_file()]
        return sorted(found, key=lambda x: (x[1] / META).stat().st_mtime, reverse=True)  # newest first

    def _all(self) -> ModelList:
        """Every classifier with its owner and promotion, and the default."""
        found = self._job_models()
        owners = self.store.owners([i for i, _ in found]) if self.store is not None else {}
        promoted = {p.model_id for p in self.store.promotions()} if self.store is not None else set()
        items = [_info(i, p, "job", owners.get(i), i in promoted) for i, p in found]
        items += [_info(i, Path(p), "registered", None, i in promoted) for i, p in self.settings.model_dirs.items()
                  if (Path(p) / META).is_file()]
        registered = self.store.registered_models() if self.store is not None else []
        items += [_info(r.model_id, Path(r.path), "registered", r.owner, r.model_id in promoted) for r in registered
                  if (Path(r.path) / META).is_file()]
        return ModelList(items=items, default=self._default_id(items))

    def _default_id(self, items: list[ModelInfo]) -> str | None:
        known = {m.id for m in items}
        for p in self.store.promotions() if self.store is not None else []:
            if p.model_id in known:  # a promoted job's folder may have been deleted since
                return p.model_id
        return self.settings.default_classifier

    def _visible(self, m: ModelInfo, caller: Principal | None) -> bool:
        if caller is None or caller.admin or self.store is None:
            return True
        return ((m.source == "registered" and m.owner is None) or m.promoted or m.owner == caller.name
                or m.id == self.settings.default_classifier)

    def models(self, caller: Principal | None = None) -> ModelList:
        """The classifiers the caller may use (None: all)."""
        listing = self._all()
        self._cached = (time.monotonic(), listing)
        return ModelList(items=[m for m in listing.items if self._visible(m, caller)], default=listing.default)

    def promote(self, model_id: str, by: str) -> Promotion:
        """Make a classifier the service's default, servable to everyone (admins only)."""
        if self.store is None:
            raise NoClassifier("promotions need the job store")
        if all(m.id != model_id for m in self._listing(fresh=True).items):
            raise UnknownModel(f"model {model_id!r} not found; see GET /v1/models")
        p = self.store.promote(model_id, by)
        self._cached = None
        return Promotion(model=p.model_id, promoted_by=p.promoted_by, promoted_at=p.promoted_at)

    def register(self, path: str, name: str | None, caller: Principal) -> ModelInfo:
        """Record a trained classifier folder (under paths.model_roots, with meta.json) as
        model `name` (default: the folder's name), owned by the caller: servable by the next
        /v1/classify, no redeploy. ConfigError (422) for a path outside the roots or a
        folder that is not a classifier; ModelTaken (409) for an id in use."""
        if self.store is None:
            raise NoClassifier("registering classifiers needs the job store")
        # imported here: the classifier deployment imports this module and needs neither
        from jobs.errors import ConfigError
        from service.path_policy import confine_model_dir
        from service.store import ModelTaken

        folder = Path(confine_model_dir("path", path, self.settings.paths))
        try:
            json.loads((folder / META).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"path: {path!r} is not a presafe classifier (no readable {META}: {type(e).__name__}); "
                              "train one with `presafe classifier train`", key="path") from None
        model_id = name or folder.name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", model_id):
            raise ConfigError(f"name: {model_id!r} is not a model id (letters, digits, . _ -; at most 64); "
                              "give --name", key="name")
        if any(m.id == model_id for m in self._all().items):
            raise ModelTaken(f"model id {model_id!r} is taken; choose another name")
        self.store.register_model(model_id, str(folder), caller.name)
        self._cached = None  # the next resolve lists again and finds it
        return next(m for m in self._all().items if m.id == model_id)

    def resolve(self, model_id: str | None, caller: Principal | None = None) -> tuple[str, str]:
        """(id, folder) for a request's model (None: the default); see resolve_info."""
        info = self.resolve_info(model_id, caller)
        return info.id, info.path

    def resolve_info(self, model_id: str | None, caller: Principal | None = None) -> ModelInfo:
        """The ModelInfo (id, folder, version) of a request's model (None: the default). A
        model the caller may not use is "not found", like one that does not exist."""
        listing = self._listing()
        wanted = model_id or listing.default
        if wanted is None or all(m.id != wanted for m in listing.items):
            listing = self._listing(fresh=True)
        model_id = model_id or listing.default
        if model_id is None:
            raise NoClassifier("no default classifier: name one (GET /v1/models lists yours), or ask an admin "
                               "to promote one (POST /v1/models/{id}/promote) or set default_classifier")
        visible = [m for m in listing.items if self._visible(m, caller)]
        for m in visible:
            if m.id == model_id:
                return m
        known = ", ".join(m.id for m in visible) or "none"
        raise UnknownModel(f"model {model_id!r} not found (yours: {known}); see GET /v1/models")


def _info(model_id: str, path: Path, source: str, owner: str | None = None, promoted: bool = False) -> ModelInfo:
    text = (path / META).read_text()
    meta = json.loads(text)
    backbone = (meta.get("config") or {}).get("model", {}).get("backbone")
    return ModelInfo(id=model_id, version=model_version(model_id, meta, text), path=str(path), source=source,
                     backbone=backbone, owner=owner, promoted=promoted, threshold=meta.get("threshold"),
                     metrics=meta.get("metrics", {}))


def model_version(model_id: str, meta: dict, meta_text: str = "") -> str:
    """`<id>@<12 hex digits>`: of the training data's fingerprint in meta.json, else (a
    folder saved without one) of meta.json's text."""
    digest = (meta.get("data") or {}).get("fingerprint") or hashlib.sha256(meta_text.encode()).hexdigest()
    return f"{model_id}@{str(digest)[:12]}"


class ClassifierPool:
    """Loaded classifiers by folder, at most `capacity` in memory."""

    def __init__(self, capacity: int = 4, device: str | None = None, metrics=None):
        """`metrics`: a service.metrics.ServiceMetrics, told how long each load took."""
        self.capacity, self.device, self.metrics = capacity, device, metrics
        self._loaded: OrderedDict[str, tuple[int, DecisionClassifier]] = OrderedDict()

    def get(self, path: str) -> DecisionClassifier:
        try:  # a folder published again (retrained, re-registered) has a new meta.json: load it again
            stamp = os.stat(Path(path) / META).st_mtime_ns
        except OSError:
            stamp = -1
        if path in self._loaded and self._loaded[path][0] == stamp:
            self._loaded.move_to_end(path)
            return self._loaded[path][1]
        start = time.perf_counter()
        clf = DecisionClassifier.load(path, self.device)
        if self.metrics is not None:
            self.metrics.model_loaded(path, time.perf_counter() - start)
        self._loaded[path] = (stamp, clf)
        self._loaded.move_to_end(path)
        while len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return clf

    def classify_many(self, calls: list[tuple[str, list[str], list[str | None]]]) -> list[list[Decision]]:
        """One result list per call (path, prompts, responses); calls on the same model
        share one batched forward pass."""
        out: list[list[Decision]] = [[] for _ in calls]
        by_path: dict[str, list[int]] = {}
        for i, (path, _, _) in enumerate(calls):
            by_path.setdefault(path, []).append(i)
        for path, idx in by_path.items():
            clf = self.get(path)
            prompts = [p for i in idx for p in calls[i][1]]
            responses = [r for i in idx for r in calls[i][2]]
            decisions = clf.predict(prompts, responses)
            start = 0
            for i in idx:
                n = len(calls[i][1])
                out[i] = [Decision(decision=d.decision, p_refuse=d.p_refuse) for d in decisions[start:start + n]]
                start += n
        return out
