"""The web chat page: static files with no build step, served at `/`."""
