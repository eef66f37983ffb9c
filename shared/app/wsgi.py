"""WSGI entry point: `wsgi:application` for uWSGI and Gunicorn, `wsgi:app` for `flask run`."""

from flask_stacks import create_app

application = app = create_app()
