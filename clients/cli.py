"""The `presafe` command-line tool.

    presafe models prepare | list
    presafe classifier train --config jobs/configs/classifier_quickstart.yaml [key=value ...]
    presafe classifier eval --model runs/quickstart/classifier --data rows.csv [--format xstest]
    presafe classifier predict --model DIR --prompt "..." [--response "..."]
    presafe stage decide|signals|targets|align|evaluate|report --config jobs/configs/smoke.yaml [key=value ...]
    presafe run jobs/configs/quickstart.yaml [key=value ...]     (the whole pipeline, resumable)
    presafe preflight --config jobs/configs/gpu/qwen3_8b.yaml [key=value ...]   (models, t*, memory plan; no weights)
    presafe eval --config jobs/configs/eval_smoke.yaml [--model M] [--adapter DIR] [--endpoint URL --served-model N]
    presafe judge runs/jobs/quickstart --judge string_match --judge classifier=runs/judges/xstest_classifier
                  [--judge jobs/configs/judges/llama_guard_3_8b.yaml] [--headline NAME]   (re-judge, no generation)
    presafe demo-model build [--force]
    presafe export JOB_OR_ADAPTER --to DIR [--variant aligned|lambda0|NAME] [--merged] [--dtype bf16|fp16|fp32]
                   [--force] [--push-to-hub REPO [--private]]   (a standalone model folder + model card)
    presafe serve-model JOB [--variant aligned|lambda0|base] [--port 8100] [--gate classify|enforce]
                   [--tokens-file F | --no-auth] [key=value ...]   (OpenAI-compatible chat; blocks)

With a presafe service (see clients/service_commands.py; `--url` / `--token`, else
$PRESAFE_URL / $PRESAFE_TOKEN, else the service `presafe up` started):

    presafe up [--port 8000] [--storage PATH] [--address RAY_ADDRESS] [--num-cpus N] | down
    presafe jobs submit jobs/configs/quickstart.yaml [key=value ...] [--name N] [--idempotency-key K] [--wait]
    presafe jobs list [--status RUNNING] [--limit N] | status ID [--json] | logs ID [--tail N]
    presafe jobs cancel ID | resume ID [--wait] | report ID [--json]
    presafe jobs serve ID [--variant V] [--gate off|classify|enforce] [--wait] | unserve ID   (chat app on the service)
    presafe classify "prompt" [--response "..."] [--model ID] [--json]
    presafe models list            (also lists the service's classifiers when one is configured)
    presafe models register DIR [--name NAME]   (a trained classifier, servable at once; models:write)

User errors (bad config, malformed data, missing model; a request the service rejects)
print one line naming the file, key or line and exit with status 2; no traceback. A
service that cannot be reached, or a job that ends FAILED/CANCELLED under `--wait`, exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clients import service_commands
from jobs.errors import ConfigError, PresafeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="presafe", description="Safety decisions before chain-of-thought.")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="embedded offline models").add_subparsers(dest="action", required=True)
    models.add_parser("prepare", help="prepare the embedded models (idempotent)")
    models_list = models.add_parser("list", help="show the embedded models (and a service's classifiers)")
    service_commands.add_service_options(models_list)
    models_register = models.add_parser("register", help="register a trained classifier folder with a presafe "
                                                         "service: servable at once, no redeploy (models:write)")
    models_register.add_argument("dir", help="the classifier folder (with meta.json), under the service's "
                                             "paths.model_roots; a folder that exists here is sent as an "
                                             "absolute path")
    models_register.add_argument("--name", default=None, help="the model id (default: the folder's name)")
    service_commands.add_service_options(models_register)

    clf = sub.add_parser("classifier", help="the safety-decision classifier").add_subparsers(dest="action", required=True)
    train = clf.add_parser("train", help="train a classifier from a YAML config")
    train.add_argument("--config", required=True, help="YAML config (see jobs/configs/)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    ev = clf.add_parser("eval", help="evaluate a trained classifier on labelled rows")
    ev.add_argument("--model", required=True, help="a folder written by `presafe classifier train`")
    ev.add_argument("--data", required=True, help="CSV / JSON / JSONL with prompt, response, label columns")
    ev.add_argument("--format", default="auto", help="auto (default), xstest, csv, json, jsonl, ...")
    ev.add_argument("--columns", default="", help="column mapping, e.g. response=completion,label=decision")
    ev.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    pr = clf.add_parser("predict", help="decide for one prompt (and optional response)")
    pr.add_argument("--model", required=True)
    pr.add_argument("--prompt", required=True)
    pr.add_argument("--response", default=None)

    run = sub.add_parser("run", help="run the whole pipeline (resumable; see jobs/pipeline.py)")
    run.add_argument("config", help="pipeline YAML (see jobs/configs/)")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. job_id=try2 align.aux.weight=0.5")

    ev = sub.add_parser("eval", help="evaluate any model, adapter or OpenAI-compatible endpoint on the configured "
                                      "sets, judges and attacks (no training; the same report)")
    ev.add_argument("--config", required=True, help="an eval config (jobs/configs/eval_smoke.yaml, eval_paper.yaml)")
    ev.add_argument("--model", help="the model (hub id, folder, embedded name); with --endpoint: its tokenizer")
    ev.add_argument("--adapter", action="append", default=[], metavar="DIR", help="a peft LoRA adapter to evaluate "
                    "beside the model (repeat for several)")
    ev.add_argument("--endpoint", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ev.add_argument("--served-model", help="with --endpoint: the model name the server serves")
    ev.add_argument("--api", choices=["completions", "chat"], help="with --endpoint: completions (presafe renders "
                    "the prompts; default) or chat")
    ev.add_argument("overrides", nargs="*", help="key=value overrides, e.g. job_id=eval2 evaluate.limit_per_set=50")

    jd = sub.add_parser("judge", help="judge a finished job's evaluation samples again with other judges "
                                      "(nothing is generated); rewrites evaluation.json and the report")
    jd.add_argument("job", help="the job folder (<storage_path>/jobs/<job_id>)")
    jd.add_argument("--judge", action="append", required=True, metavar="SPEC",
                    help="string_match | signals (the job's signal classifier) | classifier=DIR | a judge YAML "
                         "(jobs/configs/judges/*.yaml); repeat for several")
    jd.add_argument("--headline", default=None, help="the judge that leads the report (default: the first that is "
                                                     "not the signal classifier)")

    demo = sub.add_parser("demo-model", help="the demo reasoning model (a simulation)").add_subparsers(
        dest="action", required=True)
    build = demo.add_parser("build", help="build it once into $PRESAFE_HOME (7-9 minutes on 2 CPU cores)")
    build.add_argument("--force", action="store_true", help="rebuild even if it is already built")

    ex = sub.add_parser("export", help="a job's adapter (or the merged model) as a standalone folder with a model "
                                       "card, optionally pushed to the Hugging Face Hub")
    ex.add_argument("source", metavar="JOB_OR_ADAPTER", help="a job folder or one of its adapter folders")
    ex.add_argument("--to", required=True, help="the folder to write (refused when not empty, unless --force)")
    ex.add_argument("--variant", default=None, help="which adapter of a job: aligned (default), lambda0, or a variant "
                                                    "name (aligned@s1, sweep_...) or folder name")
    ex.add_argument("--merged", action="store_true", help="merge LoRA into the base: a plain transformers model")
    ex.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                    help="weights dtype (default: the job's dtype; an adapter keeps its own)")
    ex.add_argument("--force", action="store_true", help="replace a non-empty --to")
    ex.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload to this Hugging Face repo")
    ex.add_argument("--private", action="store_true", help="create the hub repo private")

    sm = sub.add_parser("serve-model", help="serve a job's models behind an OpenAI-compatible chat API "
                                            "(Ray Serve LLM + vLLM; blocks until Ctrl-C)")
    sm.add_argument("job", help="the job folder (<storage_path>/jobs/<job_id>)")
    sm.add_argument("--variant", default=None, help="what the bare model name <job> answers with: aligned "
                                                     "(default), lambda0, base, or a variant name")
    sm.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    sm.add_argument("--port", type=int, default=None, help="port (default 8100)")
    sm.add_argument("--gate", choices=["off", "classify", "enforce"], default=None,
                    help="default safety_gate of requests: the job's classifier decides on the prompt first")
    sm.add_argument("--tokens-file", default=None, help="bearer tokens (YAML, as for presafe up); default: a new "
                                                        "token, printed once")
    sm.add_argument("--no-auth", action="store_true", help="no token checks (local experiments only)")
    sm.add_argument("--address", default=None, help="a Ray cluster to deploy on (default: a local one of its own)")
    sm.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster")
    sm.add_argument("overrides", nargs="*", help="ServeModelConfig key=value, e.g. engine.max_model_len=2048 "
                                                  "limits.max_tokens=512 refusal_message='...'")

    stage = sub.add_parser("stage", help="run one stage of the method by hand")
    stage.add_argument("name", choices=["decide", "signals", "targets", "align", "evaluate", "judge", "report"])
    stage.add_argument("--config", required=True, help="pipeline YAML (see jobs/configs/)")
    stage.add_argument("overrides", nargs="*", help="key=value overrides, e.g. align.aux.weight=0")

    pf = sub.add_parser("preflight", help="check a pipeline config before running it: models, t*, memory plan")
    pf.add_argument("--config", required=True, help="pipeline YAML (see jobs/configs/)")
    pf.add_argument("overrides", nargs="*", help="key=value overrides, e.g. resources.gpu_memory_gb=24")

    service_commands.add_parsers(sub)

    # key=value overrides may come before or after --config: collect the leftovers.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "stage":
            return _stage(args)
        if args.command == "run":
            return _run(args)
        if args.command == "preflight":
            return _preflight(args)
        if args.command == "judge":
            return _judge(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "demo-model":
            return _demo_build(args)
        if args.command == "export":
            return _export(args)
        if args.command == "serve-model":
            return _serve_model(args)
        if args.command == "classifier":
            return {"train": _classifier_train, "eval": _classifier_eval, "predict": _classifier_predict}[args.action](args)
        if args.command == "up":
            return service_commands.up_command(args)
        if args.command == "down":
            return service_commands.down_command(args)
        if args.command == "quickstart":
            return service_commands.quickstart_command(args)
        if args.command == "jobs":
            return service_commands.jobs_command(args)
        if args.command == "classify":
            return service_commands.classify_command(args)
        if args.command == "tokens":
            return service_commands.tokens_command(args)
    except PresafeError as e:
        print(f"presafe: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # 1 for an unreachable service (clients.client.ServiceUnavailable)
    except KeyboardInterrupt:
        print("presafe: interrupted", file=sys.stderr)
        return 130
    return 0


def _eval(args) -> int:
    import json as _json

    from jobs.pipeline import main as pipeline_main

    extra = ["kind=eval"]
    if args.model:
        extra.append(f"model={args.model}")
    if args.adapter:
        extra.append("evaluate.adapters=" + _json.dumps(args.adapter))
    if args.endpoint:
        if not args.served_model:
            raise ConfigError("--endpoint needs --served-model (the model name the server serves)")
        extra += [f"evaluate.endpoint.url={args.endpoint}", f"evaluate.endpoint.model={args.served_model}"]
    if args.api:
        extra.append(f"evaluate.endpoint.api={args.api}")
    return pipeline_main(["--config", args.config, *extra, *args.overrides])


def _judge(args) -> int:
    from jobs.report import write_report
    from jobs.stages.judge import judge_spec, load_job_config, run_judge

    cfg = load_job_config(args.job)
    configs = [judge_spec(s) for s in args.judge]
    out = run_judge(cfg, configs, args.headline)
    print(f"evaluation: {out}\nreport: {write_report(cfg).with_name('report.md')}")
    return 0


def _export(args) -> int:
    from jobs.export import check_hub_access, export, push_to_hub

    if args.push_to_hub:
        check_hub_access()  # before the work: an upload that cannot happen fails in a second
    out = export(args.source, args.to, args.variant, args.merged, args.dtype, args.force)
    print(f"exported: {out}")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(out, args.push_to_hub, args.private)}")
    return 0


def _serve_model(args) -> int:
    import shlex
    import time

    from jobs.config import load_config, to_dict
    from service.chat import ServedJob, ServeModelConfig
    from service.settings import TokenSpec, hash_token, new_token

    given = {"job": str(Path(args.job).resolve()), "variant": args.variant, "host": args.host, "port": args.port,
             "gate": args.gate, "tokens_file": args.tokens_file and str(Path(args.tokens_file).resolve()),
             "auth_disabled": args.no_auth or None}
    cfg = load_config(ServeModelConfig, None, [f"{k}={v}" for k, v in given.items() if v is not None]
                      + list(args.overrides))
    served = ServedJob.load(cfg.job, cfg.variant)  # a job that cannot be served fails before Ray starts
    token = None if cfg.auth_disabled or cfg.tokens_file else new_token()
    tokens = [TokenSpec(name="serve-model", sha256=hash_token(token), scopes=["classify"])] if token else []
    from service.chat_deployment import start_local

    print(f"presafe: starting {served.job_id} ({served.model}, adapters: {', '.join(served.adapters) or 'none'}) "
          "on Ray Serve LLM + vLLM; the engine takes a minute or two to start...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    url = start_local({"config": to_dict(cfg), "tokens": [t.model_dump() for t in tokens]}, args.address,
                      args.num_cpus)
    print(f"presafe: serving in {time.perf_counter() - start:.0f} s\n  url:    {url}  (OpenAI-compatible: "
          f"/chat/completions, /models)\n  models: {', '.join(served.names())}  ({served.job_id} = "
          f"{served.job_id}:{served.default})")
    if token:
        print(f"  token:  {token}  (scope classify; shown once)\n"
              f"export OPENAI_BASE_URL={shlex.quote(url)} OPENAI_API_KEY={shlex.quote(token)}")
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
        print("presafe: stopped", file=sys.stderr)
    return 0


def _models(args) -> int:
    if args.action == "register":
        return service_commands.register_command(args)
    from jobs.models.embedded import list_models, prepare_all

    rows = prepare_all() if args.action == "prepare" else list_models()
    for m in rows:
        state = "ready" if m.ready else "missing"
        print(f"{m.name:34} {state:8} {m.kind:36} {m.path or '-'}  ({m.note})")
    required = [m for m in rows if "SIMULATION" not in m.kind]  # the demo model is built on demand
    if args.action == "list":
        service_commands.service_models(args)
    return 0 if all(m.ready for m in required) or args.action == "list" else 1


def _stage(args) -> int:
    from jobs.align.model import check_against_model
    from jobs.config import load_config
    from jobs.pipeline_config import PipelineConfig

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    # Model-dependent checks (LoRA targets, aux layers) fail here, before any work.
    try:
        check_against_model(cfg.align, cfg.model)
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e} (model {cfg.model})") from None
    from jobs.memory import check_memory

    try:
        check_memory(cfg)  # the memory plan; resolves auto batch sizes
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}", key=e.key) from None
    if args.name == "decide":
        from jobs.stages.decide import run_decide as run
    elif args.name == "signals":
        from jobs.stages.signals import run_signals as run
    elif args.name == "targets":
        from jobs.stages.targets import run_targets as run
    elif args.name == "align":
        from jobs.align.train import run_align as run
        from jobs.pipeline import preflight_cluster

        preflight_cluster(cfg, args.config, include_classifier=False)
    elif args.name == "evaluate":
        from jobs.stages.evaluate import run_evaluate as run
    elif args.name == "judge":
        from jobs.stages.judge import run_judge as run
    else:
        from jobs.report import write_report as run
    from jobs.scale import use_torch_threads

    use_torch_threads(cfg.torch_threads)  # as a pipeline run would
    out = run(cfg)
    print(f"{args.name}: wrote {out}")
    return 0


def _preflight(args) -> int:
    from jobs.preflight import run_preflight

    return run_preflight(args.config, args.overrides)


def _run(args) -> int:
    from jobs.pipeline import main as pipeline_main

    return pipeline_main(["--config", args.config, *args.overrides])


def _demo_build(args) -> int:
    from jobs.models.demo import build_demo_model, demo_meta, is_current_build
    from jobs.models.embedded import DEMO, cache_dir

    target = cache_dir() / "models" / DEMO
    if args.force or not is_current_build(target):
        build_demo_model(target)
    else:
        print(f"demo model already built at {target} (--force rebuilds it)")
    check = demo_meta(target)["held_out_check"]
    print(json.dumps({"path": str(target), **check}, indent=2))
    return 0


def _classifier_train(args) -> int:
    from jobs.classifier.config import ClassifierJobConfig
    from jobs.classifier.train import train_classifier
    from jobs.config import load_config

    cfg = load_config(ClassifierJobConfig, args.config, args.overrides)
    out = train_classifier(cfg)
    meta = json.loads((out / "meta.json").read_text())
    print(f"\nclassifier saved to {out} (best epoch {meta['epoch']}, thresholds: pair {meta['threshold']:.3f}, "
          f"prompt-only {meta['prompt_threshold']:.3f})")
    for split in ("validation", "test"):
        if split in meta["metrics"]:
            print(f"\n{split}:")
            print(format_metrics(meta["metrics"][split]))
    return 0


def _classifier_eval(args) -> int:
    from jobs.classifier.train import evaluate_classifier
    from jobs.config import from_dict
    from jobs.data.readers import DataSource, read_examples

    fmt = args.format
    if fmt == "auto" and _looks_like_xstest(args.data):
        fmt = "xstest"
    columns = dict(item.split("=", 1) for item in args.columns.split(",") if item)
    src = from_dict(DataSource, {"path": args.data, "format": fmt, "columns": columns}, source="--data")
    metrics = evaluate_classifier(args.model, read_examples(src))
    print(format_metrics(metrics))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(metrics, indent=2))
    return 0


def _classifier_predict(args) -> int:
    from jobs.classifier.model import DecisionClassifier

    clf = DecisionClassifier.load(args.model)
    d = clf.predict([args.prompt], [args.response])[0]
    print(json.dumps({"decision": d.decision, "p_refuse": round(d.p_refuse, 6),
                      "threshold": clf.threshold_for(args.response)}))
    return 0


def format_metrics(metrics: dict) -> str:
    """A small table: one line per row kind (all, pairs, prompt_only)."""
    lines = [f"  {'rows':12} {'n':>6} {'acc':>7} {'f1':>7} {'auroc':>7}  confusion [[TN FP] [FN TP]]"]
    for kind in ("all", "pairs", "prompt_only"):
        m = metrics.get(kind, {})
        if not m.get("n"):
            continue
        auroc = "-" if m["auroc"] is None else f"{m['auroc']:.4f}"
        lines.append(f"  {kind:12} {m['n']:>6} {m['accuracy']:>7.4f} {m['f1']:>7.4f} {auroc:>7}  {m['confusion']}")
    return "\n".join(lines)


def _looks_like_xstest(path: str) -> bool:
    if not path.endswith(".csv") or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        header = f.readline()
    return all(c in header for c in ("prompt_label", "completion", "decision"))


if __name__ == "__main__":
    sys.exit(main())
