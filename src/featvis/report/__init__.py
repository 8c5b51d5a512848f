"""The HTML gallery over a run folder written by :func:`featvis.visualize.visualize`."""

from .gallery import (EVALUATION, EVALUATION_FORMAT, INDEX, RUN_FORMAT, SUMMARY, ReportError,
                      build_gallery, gallery_files, load_evaluation, load_summary)

__all__ = ["build_gallery", "gallery_files", "load_summary", "load_evaluation", "ReportError", "INDEX",
           "SUMMARY", "RUN_FORMAT", "EVALUATION", "EVALUATION_FORMAT"]
