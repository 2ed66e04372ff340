"""HTTP: the only room that knows Flask, werkzeug and gunicorn (app factory, routes, WSGI entry,
server settings, warm-up, after-response garbage collection, CORS and body limits)."""
