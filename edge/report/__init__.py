"""One look for every HTML page leukoedge writes, and the one research-use notice."""

from leukoedge.report.page import (
    RESEARCH_USE_NOTICE,
    escape,
    figures,
    html_page,
    img,
    paragraph,
    png_data_uri,
    render_page,
    table,
)

__all__ = [
    "RESEARCH_USE_NOTICE",
    "escape",
    "figures",
    "html_page",
    "img",
    "paragraph",
    "png_data_uri",
    "render_page",
    "table",
]
