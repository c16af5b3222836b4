"""What every command line of the project shares: messages on stderr, quiet third-party
libraries, and one way to turn a command's errors into exit codes.

Torch-free and pipeline-free: the deployment commands (``audioflow.cli.deploy``) use it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# Modules of the extras (pyproject.toml): their absence means a core install, not a bug.
PIPELINE_MODULES = frozenset({"torch", "torchaudio", "pandas", "yaml", "pydantic", "sklearn", "matplotlib",
                              "safetensors", "onnx", "onnxscript", "great_expectations", "s3fs", "boto3",
                              "zenml", "dvc", "kfp"})


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Silence import-time chatter of third-party libraries that would drown progress and summary."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings

    for name in ("great_expectations", "torch.onnx", "onnxscript", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_command(fn: Callable[[object], int], args, prog: str = "audioflow") -> int:
    """``fn(args)`` with the project's exit codes: 2 for a reported error (``error: ...`` on
    stderr), 130 when interrupted, 141 when the reader of stdout went away. ``prog`` and
    ``args.command`` name the command in messages, e.g. ``audioflow train``."""
    quiet_libraries()
    from audioflow.errors import AudioflowError

    try:
        return fn(args)
    except (AudioflowError, FileNotFoundError) as exc:
        say(f"error: {exc}")
        return 2
    except ModuleNotFoundError as exc:  # a core (deployment) install running a pipeline command
        if exc.name and exc.name.split(".")[0] in PIPELINE_MODULES:
            say(f"error: `{prog} {args.command}` needs the pipeline's dependencies ({exc.name} is not "
                "installed): pip install 'audioflow[train]' (or [all] for ZenML, DVC and Kubeflow too)")
            return 2
        raise
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:  # `audioflow predict ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
