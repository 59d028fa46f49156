"""Tally's HTTP API and browser UI (FastAPI). Routes per resource live in routes/."""
