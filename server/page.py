"""The page at / and its files under /static (static/: no CDN; its CSP is
guard.secure_headers')."""
import os

from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')


def add_page_routes(app):
    """GET / (static/index.html) and the files of static/ under /static."""
    @app.get('/', include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC, 'index.html'))  # its CSP: guard.secure_headers

    app.mount('/static', StaticFiles(directory=STATIC), name='static')
