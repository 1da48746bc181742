"""TF Serving's error format: ``{"error": "<message>"}``, 400 for an invalid argument (native routes: 422)."""

from fastapi.responses import JSONResponse

from service.errors import Problem


def render_error(problem: Problem) -> JSONResponse:
    """A ``Problem`` as TF Serving answers it."""
    return JSONResponse({"error": problem.message}, status_code=400 if problem.status == 422 else problem.status)

