"""The API's routes, one APIRouter per concern, each built for the server's settings (its
limits appear in the routes' validation and in the OpenAPI document):
`operations` (/, /health, /ready, /metrics), `predictions` (/predict) and `reference`
(/nomenclature/{code}, /model)."""
