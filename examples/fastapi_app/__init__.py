"""A FastAPI app monitored by asgimon, with synthetic traffic: ``make demo``."""
