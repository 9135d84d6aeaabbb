"""The API's answers as pydantic models: presenters build through them, and /openapi.json is generated from them."""
