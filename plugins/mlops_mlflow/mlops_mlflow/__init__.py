"""The MLflow plugin: ``tracker=mlflow`` (or ``tracker=[local,mlflow]``), registered through the same
hooks as the built-ins. The tracker is named by a lazy string: importing this module imports no MLflow,
so ``mlops --help`` stays fast."""

from pathlib import Path

from mlops_framework.hookspecs import hookimpl

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hookimpl
def register_config_dirs(register):
    register(CONFIG_DIR)


@hookimpl
def register_trackers(register):
    register("mlflow", "mlops_mlflow.tracker:MlflowTracker")
