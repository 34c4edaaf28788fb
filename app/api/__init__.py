"""FastAPI application: one router per resource, assembled in ``app.api.main``."""
