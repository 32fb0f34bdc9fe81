"""A small Django project that the deployment recipes in docs/deployment.md run.

tests/test_recipes.py starts real servers on it (gunicorn, uWSGI, uvicorn,
Celery, management commands) and asks the database server what they did.
"""
