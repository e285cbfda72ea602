"""MLflow calls made during and after training, which wait out an MLflow store that stops answering
(a tracking server that restarts, a SQLite file another writer holds, a database that fails over),
for a bounded time: ``mlflow.store_wait_s``.

Past that time the run stops with :class:`StoreOutage`, its last epoch's checkpoint kept, to be
resumed once the store answers again, rather than wait for it without end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import Any, Callable, Iterator, TypeVar

from cifar.errors import UserError, first_line
from cifar.interrupts import interrupts_held, interrupts_let_through

log = logging.getLogger(__name__)
T = TypeVar("T")

LONGEST_PAUSE_S = 60.0  # between two tries: 1, 2, 4, ... s, up to this
# MLflow retries each request to a tracking server itself, 7 times over about 4 minutes by default; within a
# try it makes one request (unless the user set this), so that the wait is this module's to bound.
MLFLOW_RETRIES_VAR = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
# Statuses of a store that cannot answer now (an MlflowException's), as opposed to one that refused the request
UNAVAILABLE_STATUSES = frozenset({408, 429})


class StoreOutage(BaseException):
    """The MLflow store failed for all of ``mlflow.store_wait_s``. A BaseException, so that it passes the
    per-job error handling of Hydra's launchers: it stops a sweep too, whose next jobs would meet it."""


# The last line of a job's traceback where a StoreOutage stopped it, in the error of a launcher that runs the
# jobs in processes of their own and raises an error of its own (submitit's, with the job's stderr in it)
_JOB_OUTAGE_LINE = re.compile(rf"^{re.escape(StoreOutage.__module__)}\.{StoreOutage.__qualname__}: (.+)$", re.MULTILINE)


def store_outage(err: BaseException | None) -> StoreOutage | None:
    """The :class:`StoreOutage` that ``err`` is, or that stopped the job that ``err`` reports (a launcher's error
    with the job's traceback in it); else None."""
    if isinstance(err, StoreOutage):
        return err
    lines = _JOB_OUTAGE_LINE.findall(str(err))
    return StoreOutage(lines[-1]) if lines else None


class Retrying:
    """Calls ``call(*args, **kwargs)`` and, while it fails for want of the store, again after 1, 2, 4, ... s
    (60 s at most) until ``wait_s`` have passed; then raises :class:`StoreOutage`. An error that is the
    request's, which the store refused (an MlflowException with a 4xx status), or the user's (a UserError, as of
    an experiment that was deleted), is raised at once.

    A try can take longer than its pause: a request to a server that accepts and never answers
    waits ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (120 s) first.
    """

    def __init__(self, wait_s: float, store: str, wait_set_by: str = "mlflow.store_wait_s") -> None:
        self.wait_s = wait_s
        self.store = store
        self.wait_set_by = wait_set_by  # named in the StoreOutage

    def at_most(self, wait_s: float, set_by: str) -> Retrying:
        """The same calls, waiting ``wait_s`` (which ``set_by`` names) at most."""
        return self if self.wait_s <= wait_s else Retrying(wait_s, self.store, set_by)

    def __call__(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + self.wait_s
        pause = 1.0
        while True:
            try:
                with interrupts_held(), one_request_a_try():  # an interrupt lands between calls, not in SQLAlchemy
                    return call(*args, **kwargs)
            except Exception as err:  # stores fail with many error types (sqlalchemy, requests, OS, boto)
                if refused_request(err) or isinstance(err, UserError):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreOutage(f"the MLflow store {self.store} failed for {self.wait_s:g} s "
                                      f"({self.wait_set_by}; last error: {type(err).__name__}: {first_line(err)})"
                                      ) from err
                pause = min(pause, left)
                log.warning("MLflow store unavailable (%s: %s): retrying in %.0f s", type(err).__name__,
                            first_line(err), pause)
                with interrupts_let_through():  # Ctrl-C ends the wait, even where a caller holds it
                    time.sleep(pause)
                pause = min(2 * pause, LONGEST_PAUSE_S)


def try_once(call: Callable[..., Any], *args: Any) -> None:
    """``call(*args)`` tried once, its error logged, not raised: ending a run after the store's outage."""
    try:
        with interrupts_held(), one_request_a_try():
            call(*args)
    except Exception as err:
        log.warning("MLflow store still unavailable (%s: %s)", type(err).__name__, first_line(err))


def refused_request(err: Exception) -> bool:
    """Whether ``err`` is the store's answer that the request is wrong (an MlflowException with a 4xx
    status but 408 and 429), which no wait changes."""
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException):
        return False
    status = err.get_http_status_code()
    return 400 <= status < 500 and status not in UNAVAILABLE_STATUSES


@contextlib.contextmanager
def one_request_a_try() -> Iterator[None]:
    """MLflow's own retries of a tracking server's requests off for the block, unless the user set them."""
    if MLFLOW_RETRIES_VAR in os.environ:
        yield
        return
    os.environ[MLFLOW_RETRIES_VAR] = "0"
    try:
        yield
    finally:
        os.environ.pop(MLFLOW_RETRIES_VAR, None)
