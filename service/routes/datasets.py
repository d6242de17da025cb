"""GET /v1/datasets: what the catalog offers, with image and category counts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from prunebench.contract import DatasetInfo, Page
from prunebench.datasets.catalog import CatalogError, DatasetSpec
from prunebench.service.deps import CatalogDep, get_principal
from prunebench.service.problems import Problem
from prunebench.service.responses import PROBLEM_RESPONSES

# Router-level: the routes do not need the caller's name, but only key holders may list the catalog.
router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"], dependencies=[Depends(get_principal)], responses=PROBLEM_RESPONSES
)

# Parsing a COCO instances JSON (25 MB for val2017) per listing would be slow: cache by file identity.
_info_cache: dict[tuple[str, Path, int, int], DatasetInfo] = {}
_lock = threading.Lock()


def dataset_info(spec: DatasetSpec) -> DatasetInfo:
    try:
        stat = spec.annotations.stat()
    except OSError as exc:
        raise CatalogError(f"dataset {spec.name!r}: cannot read annotations: {exc}") from exc
    key = (spec.name, spec.annotations, stat.st_size, stat.st_mtime_ns)
    with _lock:
        hit = _info_cache.get(key)
    if hit is None:
        hit = spec.info()
        with _lock:
            _info_cache[key] = hit
    return hit


@router.get("", response_model=Page[DatasetInfo])
def list_datasets(
    catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[DatasetInfo]:
    """The usable datasets of the catalog, in catalog order. A broken entry is left out: it is the
    operator's to fix, and the others stay usable."""
    items: list[DatasetInfo] = []
    for spec in catalog.values():
        try:
            items.append(dataset_info(spec))
        except CatalogError:
            continue
    return Page[DatasetInfo](items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset)


@router.get("/{name}", response_model=DatasetInfo)
def get_dataset(name: str, catalog: CatalogDep) -> DatasetInfo:
    spec = catalog.get(name)
    if spec is None:
        raise Problem(404, f"no dataset {name!r}", kind="unknown-dataset")
    try:
        return dataset_info(spec)
    except CatalogError as exc:
        raise Problem(422, str(exc), kind="dataset-unusable") from exc
