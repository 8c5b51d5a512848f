"""The run folder's records, typed once: what visualize writes is what the schema declares,
and the validator built from the declarations names the first field that departs."""

import json
from typing import get_type_hints

import pytest
import torch

from featvis import VisualizeSettings, visualize
from featvis.io.runfolder import (Layer, Panel, RunFolderError, Section, Summary, UnitRecord,
                                  load_summary, problem)

from helpers import random_dbn


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "run"
    visualize(random_dbn([16, 6, 4]), torch.rand(30, 16, generator=torch.Generator()
                                                 .manual_seed(0)), out,
              VisualizeSettings(units=2, k=2, steps=3, restarts=1, samples=3, top=3),
              progress=False)
    return out


def _declared(record: dict, typed) -> set[str]:
    return set(record) - set(get_type_hints(typed))


def test_the_writer_writes_only_declared_fields(run):
    summary = json.loads((run / "summary.json").read_text())
    assert problem(summary, Summary) is None
    assert _declared(summary, Summary) == set()
    for layer in summary["layers"]:
        assert _declared(layer, Layer) == set()
        assert all(_declared(section, Section) == set() for section in layer["sections"])
        for unit in layer["unit_details"]:
            # besides the declared fields, the records of the methods shown on the unit
            assert _declared(unit, UnitRecord) <= set(layer["methods"])
            assert all(_declared(panel, Panel) == set() for panel in unit["panels"])


@pytest.mark.parametrize("change,found", [
    (lambda s: s.update(trained_layers=True),
     "trained_layers: expected an integer or null, got True"),
    (lambda s: s["layers"][0].pop("unit_details"), "layers[0]: missing 'unit_details'"),
    (lambda s: s["layers"][1]["sections"][0].update(file="../../etc/passwd"),
     "layers[1].sections[0].file: '../../etc/passwd' is not a plain relative path (letters, "
     "digits, '._-')"),
    (lambda s: s["layers"][0]["unit_details"][1]["panels"][0]["facts"].append(["a", 1, 2]),
     "layers[0].unit_details[1].panels[0].facts[0]: expected a list, got ['a', 1, 2]"),
    (lambda s: s["layers"][0]["figures"]["examples"].update(x="big"),
     "layers[0].figures['examples']['x']: expected a number or null, got 'big'"),
    (lambda s: s["layers"][0].update(layer=-1),
     "layers[0].layer: expected a layer number or a name of 1..1000 characters, got -1"),
    (lambda s: s["layers"][0]["units"].append(1.5),
     "layers[0].units[2]: expected an integer, got 1.5"),
])
def test_the_validator_names_the_first_field_that_departs(run, change, found):
    summary = json.loads((run / "summary.json").read_text())
    for layer in summary["layers"]:           # facts of a unit without any: make room
        layer["unit_details"][1]["panels"][0]["facts"].clear()
    change(summary)
    assert problem(summary, Summary) == found


def test_load_summary_refuses_a_malformed_record_in_one_line(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["layers"][0]["sections"][0]["caption"] = 7
    (copy / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(RunFolderError) as caught:
        load_summary(copy)
    assert str(caught.value) == (f"{copy / 'summary.json'}: malformed: layers[0].sections[0]."
                                 "caption: expected a string, got 7")
    assert load_summary(run)["layers"][0]["layer"] == 1


def test_fields_older_runs_lack_are_not_required(run):
    summary = json.loads((run / "summary.json").read_text())
    for field in ("featvis_version", "settings", "sanity_settings"):
        del summary[field]
    for layer in summary["layers"]:
        for field in ("type", "n_units", "unit_shape", "unavailable", "flags"):
            layer.pop(field, None)
    assert problem(summary, Summary) is None
