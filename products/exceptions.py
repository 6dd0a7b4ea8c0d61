"""API errors: DRF's JSON shape, with the right status for every failure."""

from __future__ import annotations

import logging

from django.db import IntegrityError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

DUPLICATE_NAME_MESSAGE = "A product with this name already exists."


class ProductNameConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "unique"

    def __init__(self) -> None:
        super().__init__({"name": [DUPLICATE_NAME_MESSAGE]})


class InsufficientStockConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Not enough stock: the quantity would become negative."
    default_code = "insufficient_stock"


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The product has changed since you read it (If-Match does not match)."
    default_code = "precondition_failed"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Extend DRF's handler: a constraint the database caught is a 409, not a 500."""
    if isinstance(exc, IntegrityError):
        # Two clients created the same name at once: validation passed for
        # both, the unique index stopped the second.
        logger.info("Integrity error answered as 409: %s", exc)
        text = str(exc).lower()
        if "unique" in text or "duplicate" in text:
            body = {"name": [DUPLICATE_NAME_MESSAGE]}
        else:
            body = {"detail": "The change conflicts with the stored data."}
        return Response(body, status=status.HTTP_409_CONFLICT)
    return exception_handler(exc, context)
