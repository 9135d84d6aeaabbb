"""The facade's routes, mounted at `/openai/v1` by api/app.py."""

from starlette.routing import Route

from api.openai import chat, models, responses

ROUTES = [
    Route("/models", models.list_models, methods=["GET"]),
    Route("/models/{model_id:path}", models.get_model, methods=["GET"]),
    Route("/chat/completions", chat.create_chat_completion, methods=["POST"]),
    Route("/responses", responses.create_response, methods=["POST"]),
    Route("/responses/{response_id}", responses.get_response, methods=["GET"]),
    Route("/responses/{response_id}/cancel", responses.cancel_response, methods=["POST"]),
]
