"""Small host apps that tests serve with a real uvicorn (``python -m uvicorn ... --factory``)."""
