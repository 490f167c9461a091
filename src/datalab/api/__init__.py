"""REST API routers (FastAPI). OpenAPI at ``/api/openapi.json``, docs at ``/api/docs``."""
