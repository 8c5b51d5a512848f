"""The outputs of small end-to-end runs stay those pinned before the redesign (issue 21);
the unit statistics added since (issue 23) and the records the gallery reads since issue 24
are set aside, and change nothing else."""

import json
import math
from dataclasses import asdict

import pytest

from featvis import VisualizeSettings

from regression import CASES, REFERENCE, fingerprint, run_case


def _differences(old, new, where="summary"):
    """Where two JSON values differ, floats allowed 1e-6 apart."""
    if isinstance(old, float) or isinstance(new, float):
        same = (isinstance(new, (int, float)) and isinstance(old, (int, float))
                and math.isclose(old, new, rel_tol=0, abs_tol=1e-6))
        return [] if same else [f"{where}: {old!r} -> {new!r}"]
    if isinstance(old, dict) and isinstance(new, dict):
        if old.keys() != new.keys():
            return [f"{where}: keys {sorted(old.keys() ^ new.keys())} differ"]
        return [d for key in old for d in _differences(old[key], new[key], f"{where}.{key}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in _differences(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


ADDED = "statistics"          # a method added since the pin: its records and files set aside


def _without_added(record):
    """The run's record without the added method's records and pictures (which change
    nothing the pinned methods show)."""
    files = set()
    record["summary"]["settings"]["methods"].remove(ADDED)
    for layer in record["summary"]["layers"]:
        assert ADDED in layer["methods"], layer["layer"]
        layer["methods"].remove(ADDED)
        files |= {sec["file"] for sec in layer["sections"] if sec["method"] == ADDED}
        layer["sections"] = [sec for sec in layer["sections"] if sec["method"] != ADDED]
        layer["files"].pop(ADDED)
        layer["figures"].pop(ADDED)
        layer["flags"] = [flag for flag in layer.get("flags", []) if flag["method"] != ADDED]
        for detail in layer["unit_details"]:
            assert detail.pop(ADDED)["histogram"]
            for panel in (p for p in detail["panels"] if p["method"] == ADDED):
                for image in panel["images"]:
                    files.add(image["file"])
                    detail["files"] = {k: v for k, v in detail["files"].items()
                                       if v != image["file"]}
            detail["panels"] = [p for p in detail["panels"] if p["method"] != ADDED]
    assert files and files <= record["pngs"].keys()
    record["pngs"] = {name: h for name, h in record["pngs"].items() if name not in files}
    return record


# What the gallery's redesign (issue 24) added to the records, beside the pinned ones.
ADDED_FACTS = {"best example's score", "dead unit", "flat picture", "faint contrast",
               "incoming-weight norm"}


def _without_gallery_records(record):
    """The run's record without what the gallery reads since issue 24: the inputs mined,
    the figures' notes, the sections' settings, the units' tiles, the pictures' layouts and
    the facts added to the panels (the pictures themselves are unchanged)."""
    summary = record["summary"]
    assert summary.pop("inputs")["count"] > 0
    for layer in summary["layers"]:
        assert layer.pop("notes")
        for section in layer["sections"]:
            section.pop("params")
        for detail in layer["unit_details"]:
            assert detail.pop("tiles")
            for panel in detail["panels"]:
                for image in panel["images"]:
                    image.pop("grid", None)
                panel["facts"] = [f for f in panel["facts"] if f[0] not in ADDED_FACTS]
    return record


CHANGED = "training.png"          # the gallery's training plot: retitled in issue 24


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_match_the_pinned_run(case, tmp_path):
    pinned = json.loads((REFERENCE / f"{case}.json").read_text())
    now = _without_gallery_records(_without_added(fingerprint(run_case(case, tmp_path))))
    for record in (pinned, now):
        record["summary"].pop("featvis_version")
        record["pngs"].pop(CHANGED, None)
    # Settings added since the pin must hold their defaults, which are the old behaviour.
    defaults = asdict(VisualizeSettings())
    for name in now["summary"]["settings"].keys() - pinned["summary"]["settings"].keys():
        assert now["summary"]["settings"].pop(name) == defaults[name], name
    assert _differences(pinned["summary"], now["summary"]) == []
    changed = {name for name in pinned["pngs"].keys() | now["pngs"].keys()
               if pinned["pngs"].get(name) != now["pngs"].get(name)}
    assert not changed, f"PNGs that differ: {sorted(changed)[:10]}"
