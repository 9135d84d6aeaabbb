"""What the service says about itself: its health."""

from __future__ import annotations

from typing import Literal

from api.schemas.base import ResponseModel


class Health(ResponseModel):
    """`GET /healthz`: the process is up and serving."""

    status: Literal["ok"]
