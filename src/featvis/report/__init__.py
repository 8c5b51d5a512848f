"""The HTML gallery over a run folder written by :func:`featvis.visualize`."""

from .gallery import INDEX, ReportError, build_gallery, gallery_files

__all__ = ["build_gallery", "gallery_files", "ReportError", "INDEX"]
