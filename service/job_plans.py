"""From a job order to its work: the request validated (again, in a worker) and planned with this
process's settings, so a worker applies the same caps (``MAX_EPOCHS``, ``MAX_MODEL_PARAMS``,
``MAX_TRAIN_SECONDS``) to a job as the replica that accepted it.

One function for both paths: the routes call it through the job backend when they queue an order, and
``lstm-serve worker`` calls it when it takes the order from the queue.
"""

from pydantic import BaseModel

from models.errors import InvalidInput
from models.serving.model_index import ModelIndex
from models.training.comparison import plan_comparison
from models.training.fitting import plan_training
from models.training.job_queue import ArtifactPath, JobOrder, Plan
from service.config import Settings
from service.schemas import CompareRequest, TrainRequest

#: The file name of a comparison's learning curves, beside its job record.
REPORT_PNG = "report.png"

REQUESTS: dict[str, type[BaseModel]] = {"train": TrainRequest, "compare": CompareRequest}


def plan_job(order: JobOrder, artifact_path: ArtifactPath, *, index: ModelIndex, settings: Settings) -> Plan:
    """Validate an order (``InvalidInput``, or pydantic's ``ValidationError`` for JSON a worker reads back)
    and return its work and total epochs."""
    body = order.request
    if isinstance(body, str):  # from the queue: the same validation the route's body went through
        body = REQUESTS[order.kind].model_validate_json(body)
    fit = body.fit_settings(settings)
    source = {
        "sequences": body.data.sequences if body.data else None,
        "labels": body.answers(),
        "dataset": body.dataset,
    }
    overrides = body.params.model_dump(exclude_none=True)
    if order.kind == "train":
        assert isinstance(body, TrainRequest) and order.model is not None
        work = plan_training(index, order.model, body.architecture, overrides, settings=fit, **source)
        return Plan(work, fit.epochs)
    assert isinstance(body, CompareRequest)
    if body.architectures and len(set(body.architectures)) != len(body.architectures):
        raise InvalidInput("List each architecture once.", field="architectures", got=body.architectures)
    work, total_epochs = plan_comparison(
        index,
        lambda job_id: artifact_path(job_id, REPORT_PNG),
        architectures=body.architectures,
        overrides=overrides,
        settings=fit,
        keep_best_as=body.keep_best_as,
        **source,
    )
    return Plan(work, total_epochs)
