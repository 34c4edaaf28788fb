"""Recommendation-job routes (owned by the grouping work; the app assembles ``router``)."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"])
