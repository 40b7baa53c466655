"""A FastAPI app monitored by asgimon, with synthetic traffic: ``python -m examples.fastapi_app``
(``make demo`` serves the same API in plain Starlette, from the package)."""
