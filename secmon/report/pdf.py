"""HTML -> PDF with WeasyPrint (pango lays out the Vietnamese text; no browser). Pure: bytes in memory."""

from __future__ import annotations

from secmon.errors import InputError


def to_pdf(html: str) -> bytes:
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except OSError as exc:  # WeasyPrint is installed but the system's pango is not
        raise InputError(f"PDF output needs the pango library: {exc}",
                         hint="apt-get install libpango-1.0-0 libpangoft2-1.0-0 (scripts/bootstrap does it)") from None
    # The document inlines its charts (data: URIs) and loads nothing else, whatever the data says.
    inline_only = URLFetcher(allowed_protocols=("data",), fail_on_errors=True)
    return HTML(string=html, base_url=None, url_fetcher=inline_only).write_pdf()  # type: ignore[no-any-return]
