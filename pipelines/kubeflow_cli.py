"""The Kubeflow Pipelines front's command line: compile the pipeline, or run it here.

    python -m pipelines.kubeflow_cli compile audioflow-pipeline.yaml   # the IR YAML to upload
    python -m pipelines.kubeflow_cli run-local --set features.shards=3  # kfp.local, no cluster

Run from the project root (the folder with pipelines/ and configs/). The options of
``audioflow <stage>`` (--params, --set, --artifacts, --outputs, -q) work the same here.
"""

from __future__ import annotations

import argparse
import json
import sys

from audioflow.cli.common import run_command, say
from audioflow.cli.pipeline import layout_of, overrides_of, params_of, pipeline_options

PROG = "python -m pipelines.kubeflow_cli"


def cmd_compile(args) -> int:
    from pipelines import kubeflow

    out = kubeflow.compile_pipeline(args.out, args.params, overrides_of(args), args.config, args.image)
    shards = params_of(args).features.shards
    say(f"kubeflow: wrote {out} (pipeline {kubeflow.PIPELINE_NAME!r}, featurize in {shards} task(s)); "
        "upload it in the Kubeflow Pipelines UI or with kfp.Client().create_run_from_pipeline_package")
    return 0


def cmd_run_local(args) -> int:
    from audioflow import stages
    from pipelines import kubeflow

    params = params_of(args)
    outputs = kubeflow.run_local(args.pipeline_root, args.data_root or params.data.root, args.params,
                                 overrides_of(args), args.config, image=args.image,
                                 checkpoint_root=args.checkpoint_root, checkpoint_run=args.checkpoint_run)
    lay = layout_of(args)
    stages.publish(stages.STAGES["evaluate"], outputs["evaluation"], lay.outputs)
    stages.publish(stages.STAGES["export"], outputs["onnx_model"], lay.outputs)
    m = json.loads((lay.outputs / "metrics.json").read_text())
    say(f"kubeflow (local): test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}; "
        f"results in {lay.outputs}; artifacts: {json.dumps({k: str(v) for k, v in outputs.items()})}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kf = parser.add_subparsers(dest="command", required=True, metavar="ACTION")
    kf_common = argparse.ArgumentParser(add_help=False, parents=[pipeline_options()])
    kf_common.add_argument("--config", default="configs/kfp.yaml",
                           help="image, secret, resources, retries (default: configs/kfp.yaml)")
    q = kf.add_parser("compile", parents=[kf_common], help="write the pipeline IR YAML to upload to a cluster",
                      description="Write the pipeline's IR YAML. params.yaml becomes the default of the "
                                  "params_yaml run parameter; features.shards sets the featurize fan-out.")
    q.add_argument("out", help="the YAML file to write, e.g. audioflow-pipeline.yaml")
    q.add_argument("--image", help="steps image (overrides `image` in --config)")
    q.set_defaults(fn=cmd_compile)
    q = kf.add_parser("run-local", parents=[kf_common], help="run the pipeline here under kfp.local",
                      description="Run the Kubeflow pipeline on this machine (kfp.local, one subprocess per "
                                  "component, no cluster), then copy its metrics and model to OUTPUTS.")
    q.add_argument("--pipeline-root", default=".kfp-local", help="where KFP writes artifacts (default: .kfp-local)")
    q.add_argument("--data-root", help="data folder or URL (default: data.root from params)")
    q.add_argument("--image", help="run every component in a container of this steps image (kfp.local's "
                                   "DockerRunner: Docker, or podman's Docker API through DOCKER_HOST) instead "
                                   "of a subprocess, e.g. localhost/audioflow-steps:dev from `make images`")
    q.add_argument("--checkpoint-root", help="where train keeps its resumable checkpoint, e.g. an s3:// URL "
                                             "(default: checkpoints in --config)")
    q.add_argument("--checkpoint-run", default="", help="resume the training of an earlier run that stopped "
                                                        "(its checkpoint is under --checkpoint-root/RUN): "
                                                        "that run's id, or any name both runs are given")
    q.set_defaults(fn=cmd_run_local)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.fn, args, PROG)


if __name__ == "__main__":
    sys.exit(main())
