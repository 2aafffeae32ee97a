"""MLflow: a run's metrics lines as an MLflow run (``mlflow-skinny``, the ``mlflow`` extra).

By default the MLflow run lives in a local file store inside the run directory,
``RUN_DIR/mlruns`` (experiment ``gradflow``), next to the run's own files:
``mlflow ui --backend-store-uri RUN_DIR/mlruns`` shows it. Option ``tracking_uri`` sends it to
another store instead (a tracking server, a database). The MLflow run is named after the run
directory; its parameters are the resolved configuration (``run.steps``, ``estimator.name``,
...), its metrics every number of every metrics line at the line's step, and it ends
``FINISHED``, ``KILLED`` (interrupted) or ``FAILED`` (diverged, or a plugin failed).

Each MLflow run is tagged ``gradflow.run_dir`` with the run directory's absolute path. When the
logger opens — a new run, or a resumed one — it deletes (MLflow's soft delete) the active MLflow
runs of that tag and starts a new one from the lines already in ``metrics.jsonl`` (a resumed
run's, up to its checkpoint): the store's active run holds exactly the lines of ``metrics.jsonl``,
never those an interrupted process logged after its last checkpoint, on a local store as on a
server. (``mlflow gc`` removes the deleted ones for good.)

MLflow 3 keeps its file store in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true``: the logger sets that variable for the local store it owns (a
store in a run directory, read by MLflow's own client and ``mlflow ui``).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gradflow_plugins.loggers.tensorboard import scalars
from pydantic import Field

import gradflow

#: the local store, inside the run directory
DIRECTORY = "mlruns"
#: the tag of an MLflow run that names the gradflow run directory it belongs to
TAG = "gradflow.run_dir"
#: how a run's end maps to MLflow's run statuses
END_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}


class MLflowOptions(gradflow.LoggerOptions):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: a file store in RUN_DIR/mlruns)")
    experiment: str = Field("gradflow", description="MLflow experiment of the runs")


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's deprecation and future warnings are MLflow's business, not the run's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"run.steps": "100000", ...}``: a nested configuration as MLflow parameters."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:500]  # MLflow's limit on a parameter's value
    return out


class MLflowLogger(gradflow.Logger):
    name = "mlflow"
    description = "an MLflow run, in a local file store RUN_DIR/mlruns by default (extra 'mlflow')"
    Options = MLflowOptions

    def __init__(self, options: MLflowOptions) -> None:
        super().__init__(options)
        try:
            with _quiet():
                from mlflow.entities import Metric, Param
                from mlflow.tracking import MlflowClient
        except ImportError:
            raise gradflow.PluginError("logger 'mlflow' needs MLflow: pip install "
                                       "'gradflow[mlflow]'") from None
        self._client_class, self._metric, self._param = MlflowClient, Metric, Param
        self.client: Any = None
        self.run_id: str | None = None

    def _store(self, run: gradflow.RunRecord) -> str:
        """The tracking URI (the local store: ``RUN_DIR/mlruns``)."""
        if self.options.tracking_uri:
            return self.options.tracking_uri
        directory = run.path / DIRECTORY
        if directory.is_symlink():
            raise gradflow.RunDirError(f"run directory {str(run.path)!r}: {DIRECTORY} is a "
                                       "symbolic link; gradflow does not write through links")
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return directory.resolve().as_uri()

    def _earlier_runs(self, experiment: str, run_dir: str) -> list[str]:
        """The ids of the active MLflow runs of this run directory."""
        ids, token = [], None
        while True:
            page = self.client.search_runs([experiment], max_results=1000, page_token=token)
            ids += [r.info.run_id for r in page if r.data.tags.get(TAG) == run_dir]
            token = page.token
            if not token:
                return ids

    def open(self, run: gradflow.RunRecord) -> None:
        run_dir = str(run.path.resolve())
        with _quiet():
            self.client = self._client_class(tracking_uri=self._store(run))
            found = self.client.get_experiment_by_name(self.options.experiment)
            experiment = (found.experiment_id if found is not None else
                          self.client.create_experiment(self.options.experiment))
            for earlier in self._earlier_runs(experiment, run_dir):
                self.client.delete_run(earlier)
            created = self.client.create_run(experiment, run_name=run.path.name,
                                             tags={TAG: run_dir})
            self.run_id = created.info.run_id
            config = {k: v for k, v in run.config.items() if k != "provenance"}
            params = [self._param(k, v) for k, v in flatten(config).items()]
            for start in range(0, len(params), 100):  # MLflow's limit per batch
                self.client.log_batch(self.run_id, params=params[start:start + 100])
        for record in run.records:
            self.log(record)

    def log(self, record: dict[str, Any]) -> None:
        now, step = int(time.time() * 1000), int(record["step"])
        metrics = [self._metric(k, v, now, step) for k, v in scalars(record).items()]
        with _quiet():
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            with _quiet():
                self.client.set_terminated(self.run_id, END_STATUS.get(status, "FAILED"))
        self.client, self.run_id = None, None
