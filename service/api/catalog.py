"""Read-only catalogue: the five architectures and the built-in datasets."""

from fastapi import APIRouter

from models.architectures import ARCHITECTURES
from models.datasets import DATASETS
from service.schemas import ArchitecturePublic, DatasetPublic

router = APIRouter(tags=["catalog"])


@router.get("/architectures")
async def list_architectures() -> list[ArchitecturePublic]:
    """The five architectures, what each is and when to use it."""
    return [
        ArchitecturePublic(
            name=arch.name,
            input_kind=arch.input_kind,
            stateful=arch.stateful,
            supports_sessions=arch.supports_sessions,
            summary=arch.summary,
            when_to_use=arch.when_to_use,
            default_params=arch.default_params(),
        )
        for arch in ARCHITECTURES.values()
    ]


@router.get("/datasets")
async def list_datasets() -> list[DatasetPublic]:
    """The built-in datasets: generated from a seed, nothing downloaded."""
    return [
        DatasetPublic(
            name=d.name,
            input_kind=d.input_kind,
            description=d.description,
            n_sequences=d.n_sequences,
            max_len=d.max_len,
            vocab_size=d.vocab_size,
        )
        for d in DATASETS.values()
    ]
