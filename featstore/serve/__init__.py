"""`featstore serve`: a local web app and REST API over a store (FastAPI + uvicorn), answering from snapshots."""
