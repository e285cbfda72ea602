"""The run's best model as an MLflow model, and its version in the MLflow model registry.

The model is the :class:`cifar.inference.Classifier` of ``best.pt``, saved in MLflow's default
PyTorch format, ``pt2`` (``torch.export``): a graph that loads without this package's code, so
``mlflow.pyfunc.load_model`` and ``mlflow models predict`` use it as they would any model.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from cifar.data import CLASSES
from cifar.inference import from_checkpoint

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run id>/model
EXAMPLE_IMAGES = 2  # torch.export keeps the batch dimension dynamic only for examples of 2 or more
# Loggers that report, on every model, that MLflow found the uv project and that the venv has no pip
QUIET_LOGGERS = ("mlflow.utils.environment", "mlflow.utils.uv_utils")


def log_model(best_checkpoint: Path, example_images: np.ndarray, registered_name: str | None = None) -> str:
    """Log ``best_checkpoint``'s classifier to the active run, with ``example_images`` as the input example.

    With ``registered_name``, the model is registered under that name (a new version). Returns the
    model's URI (``models:/<model id>``).
    """
    import mlflow
    from mlflow.models import infer_signature

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    classifier = from_checkpoint(best_checkpoint)
    example = np.ascontiguousarray(example_images[:EXAMPLE_IMAGES])
    with torch.inference_mode():
        output = classifier(torch.from_numpy(example)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's and pydantic's deprecation chatter
        info = mlflow.pytorch.log_model(
            classifier,
            name=MODEL_NAME,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata={"classes": list(CLASSES)},
            registered_model_name=registered_name,
        )
    log.info("Logged the best model as %s%s", info.model_uri,
             f", registered as {registered_name} version {info.registered_model_version}" if registered_name else "")
    return info.model_uri


def logged_model_uri(client, experiment_id: str, run_id: str) -> str | None:
    """The URI of the model that run ``run_id`` logged, if it logged one."""
    logged = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return logged[0].model_uri if logged else None


def register(model_uri: str, name: str) -> int:
    """Register ``model_uri`` under ``name``; return the new version's number."""
    import mlflow

    version = mlflow.register_model(model_uri, name)
    log.info("Registered %s as %s version %s", model_uri, name, version.version)
    return int(version.version)
