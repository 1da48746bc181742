"""Read-only catalogue: the five architectures and the built-in datasets."""

from fastapi import APIRouter

from models.architectures import ARCHITECTURES
from models.training.datasets import DATASETS
from service.schemas import ArchitecturePublic, DatasetPublic

router = APIRouter(tags=["catalog"])


@router.get("/architectures")
async def list_architectures() -> list[ArchitecturePublic]:
    """The five architectures, what each is and when to use it."""
    return [ArchitecturePublic.model_validate(arch, from_attributes=True) for arch in ARCHITECTURES.values()]


@router.get("/datasets")
async def list_datasets() -> list[DatasetPublic]:
    """The built-in datasets: generated from a seed, nothing downloaded."""
    return [DatasetPublic.model_validate(dataset, from_attributes=True) for dataset in DATASETS.values()]
