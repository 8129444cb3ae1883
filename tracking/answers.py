"""How the governance server's own routes answer: JSON naming the route, MLflow's error codes.

The promotion route (:mod:`tracking.promotions`) and the request routes
(:mod:`tracking.requests`) answer in one shape, and turn the same errors into the same
statuses: a refusal its own code, a lost compare-and-set 409, an unknown model or version 404,
a bad value 400. Anything else is the server's fault and is raised.
"""

from __future__ import annotations


class Refused(Exception):
    """A call the route refuses: the status code and the one-line message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def answer(route: str, code: int, **body):
    """The route's JSON answer (``route`` names it, so clients know who answered)."""
    from flask import jsonify

    resp = jsonify({"route": route, **body})
    resp.status_code = code
    return resp


def error_answer(route: str, exc: Exception):
    """The route's answer to an error a move or a request raised; None: not the caller's fault."""
    from mlflow.exceptions import MlflowException

    from core.errors import LostRace, MlopsError
    from core.lookup import ModelNotFound, not_found

    if isinstance(exc, Refused):
        return answer(route, exc.code, error_code="REFUSED", message=str(exc))
    if isinstance(exc, LostRace):
        return answer(route, 409, error_code="LOST_RACE", message=str(exc))
    if isinstance(exc, MlflowException):
        if not_found(exc):
            return answer(route, 404, error_code="RESOURCE_DOES_NOT_EXIST", message=exc.message)
        return None
    if isinstance(exc, ModelNotFound):
        return answer(route, 404, error_code="RESOURCE_DOES_NOT_EXIST", message=str(exc))
    if isinstance(exc, MlopsError):
        return answer(route, 400, error_code="INVALID_PARAMETER_VALUE", message=str(exc))
    return None
