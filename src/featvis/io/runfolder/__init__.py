"""Run folders: their records' format, typed once (:mod:`.schema`: ``summary.json``,
``evaluation.json``, layer folders), and the ownership rule with which featvis writes them
(:mod:`.manifest`: ``manifest.json``, replacing only what it wrote itself)."""

from .manifest import (MANIFEST, MANIFEST_FORMAT, FolderContents, OwnershipError, Replacement,
                       RunBuilder, build_run, check_run_targets, inspect_folder, path_inside,
                       plan_replacement, recover, write_into_run)
from .schema import (EVALUATION, EVALUATION_FORMAT, LEGACY_RUN_FORMATS, RUN_FORMAT, SUMMARY,
                     Evaluation, EvaluationLayer, Flag, Image, Layer, Panel, RunFolderError,
                     Section, Summary, Tile, UnitRecord, check_segments, layer_folder,
                     load_evaluation, load_summary, pictures, problem)

__all__ = ["RUN_FORMAT", "LEGACY_RUN_FORMATS", "SUMMARY", "EVALUATION", "EVALUATION_FORMAT",
           "RunFolderError", "Summary", "Layer", "Section", "UnitRecord", "Panel", "Image", "Tile",
           "Flag", "Evaluation", "EvaluationLayer", "layer_folder", "check_segments",
           "problem", "pictures", "load_summary", "load_evaluation", "MANIFEST",
           "MANIFEST_FORMAT", "OwnershipError", "FolderContents", "inspect_folder",
           "Replacement", "plan_replacement", "RunBuilder", "build_run", "check_run_targets",
           "write_into_run", "recover", "path_inside"]
