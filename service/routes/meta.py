"""GET /v1/meta: the names the API speaks (methods, statuses, stages, outcomes), from the contract.

Public, like /healthz: it holds no data, and the dashboard builds its forms from it before a key is
entered. Clients read names here instead of copying them, so a new pruning method or stage needs
no client change.
"""

from __future__ import annotations

from fastapi import APIRouter

import prunebench
from prunebench.contract import (
    ALLOCATIONS,
    ANALYSES,
    ATTEMPT_OUTCOMES,
    IMPORTANCES,
    JOB_STATUSES,
    MAX_SPARSITIES,
    PRUNE_METHODS,
    RECOVERY_STEPS,
    RUNTIMES,
    SEARCH_OBJECTIVES,
    STAGES,
    TERMINAL_STATUSES,
    Meta,
)

router = APIRouter(prefix="/v1/meta", tags=["meta"])

META = Meta.model_validate(
    {
        "version": prunebench.__version__,
        "methods": PRUNE_METHODS,
        "statuses": JOB_STATUSES,
        "terminal_statuses": [s for s in JOB_STATUSES if s in TERMINAL_STATUSES],
        "stages": STAGES,
        "attempt_outcomes": ATTEMPT_OUTCOMES,
        "runtimes": RUNTIMES,
        "max_sparsities": MAX_SPARSITIES,
        "importances": IMPORTANCES,
        "allocations": ALLOCATIONS,
        "recovery_steps": RECOVERY_STEPS,
        "objectives": SEARCH_OBJECTIVES,
        "analyses": ANALYSES,
    }
)


@router.get("", response_model=Meta)
def get_meta() -> Meta:
    return META
