"""The models the facade serves: each pool by its name, and by the model its engine serves when that differs."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate
from api.openai.errors import ModelNotFound, in_openai_shape
from inference.pools import DEFAULT_POOL, PoolsConfig

# `created` in OpenAI's model object; turnlog does not know when a model was made.
MODEL_CREATED = 0


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    model_id: str  # what a client puts in `model`
    pool: str  # the pool that serves it


# A server started without a pools file runs one pool, "interactive" (inference/pools.py `default_pools`).
DEFAULT_MODELS = (ServedModel(model_id=DEFAULT_POOL, pool=DEFAULT_POOL),)


def served_models(pools: PoolsConfig) -> tuple[ServedModel, ...]:
    """Every pool by its name, then each `engine_model` that no pool name already claims."""
    models = {pool.name: ServedModel(model_id=pool.name, pool=pool.name) for pool in pools.pools}
    for pool in pools.pools:
        if pool.engine_model and pool.engine_model not in models:
            models[pool.engine_model] = ServedModel(model_id=pool.engine_model, pool=pool.name)
    return tuple(models.values())


def models_of(request: Request) -> tuple[ServedModel, ...]:
    """The catalog `create_app(pools=...)` put on the app, or the default pool's."""
    return getattr(request.app.state, "openai_models", DEFAULT_MODELS)


def find_model(request: Request, model_id: str) -> ServedModel:
    models = models_of(request)
    for model in models:
        if model.model_id == model_id:
            return model
    raise ModelNotFound(model=model_id, served=tuple(model.model_id for model in models))


def model_json(model: ServedModel) -> dict:
    return {"id": model.model_id, "object": "model", "created": MODEL_CREATED, "owned_by": f"turnlog:{model.pool}"}


@in_openai_shape
async def list_models(request: Request) -> JSONResponse:
    authenticate(request)
    return JSONResponse({"object": "list", "data": [model_json(model) for model in models_of(request)]})


@in_openai_shape
async def get_model(request: Request) -> JSONResponse:
    authenticate(request)
    return JSONResponse(model_json(find_model(request, request.path_params["model_id"])))
