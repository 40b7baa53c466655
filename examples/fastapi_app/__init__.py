"""A deployment-platform API in FastAPI, monitored by asgimon, served with synthetic traffic:
``python -m examples.fastapi_app`` (what ``make demo`` runs)."""
