"""molfusion service layer: settings, CLI entry point and the FastAPI application."""
