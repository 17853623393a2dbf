"""Artefact JSON round-trip, content hash, validation and directory loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibration.artefact import (
    ArtefactError,
    InputSpec,
    load_artefact,
    load_directory,
    parse_artefact,
    save_artefact,
)
from calibration.models import LinearModel, Term
from tests.calibration.conftest import koehler_artefact, make_artefact


def test_round_trip_keeps_everything_and_hash(tmp_path: Path) -> None:
    original = koehler_artefact()
    saved = save_artefact(original, tmp_path / "a.json")
    loaded = load_artefact(tmp_path / "a.json")
    assert loaded == saved
    assert loaded.sha256 == saved.content_hash()
    assert len(loaded.sha256 or "") == 64
    assert loaded.model == original.model
    assert loaded.inputs[1].range == (20.0, 90.0)


def test_hash_is_independent_of_key_order_and_whitespace(tmp_path: Path) -> None:
    saved = save_artefact(make_artefact(), tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    shuffled = json.dumps(dict(reversed(list(data.items()))))
    assert parse_artefact(shuffled).sha256 == saved.sha256


def test_modified_coefficient_is_detected(tmp_path: Path) -> None:
    save_artefact(make_artefact(), tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    data["model"]["terms"][0]["coef"] = 0.6
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ArtefactError, match="sha256 mismatch"):
        load_artefact(tmp_path / "a.json")


def test_missing_hash_is_refused_unless_allowed(tmp_path: Path) -> None:
    text = make_artefact().model_dump_json(by_alias=True)
    with pytest.raises(ArtefactError, match="missing sha256"):
        parse_artefact(text)
    assert parse_artefact(text, require_hash=False).id == "pm25-test"


def test_invalid_artefacts_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown quantity 'pm3'"):
        make_artefact(quantity="pm3")
    with pytest.raises(ValueError, match="reads input 2"):
        make_artefact(LinearModel(intercept=0, terms=(Term(input=2, coef=1.0),),
                                  target_transform="identity"))
    with pytest.raises(ArtefactError, match=r"model\.linear\.terms"):
        parse_artefact('{"schema": "duet-edge/calibration/1", "id": "x", "version": "1", '
                       '"quantity": "co", "sensor": {"model": "m"}, '
                       '"inputs": [{"name": "s", "quantity": "co"}], '
                       '"model": {"type": "linear", "terms": "nope"}}', require_hash=False)
    with pytest.raises(ArtefactError, match="not valid JSON"):
        parse_artefact("{")


def test_duplicate_input_names_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        make_artefact(inputs=(InputSpec(name="a", quantity="pm2_5"),
                              InputSpec(name="a", quantity="humidity")))


def test_directory_loading_prefers_the_highest_version(tmp_path: Path) -> None:
    for v in ("1", "2", "10"):
        save_artefact(make_artefact(version=v), tmp_path / f"a-{v}.json")
    save_artefact(koehler_artefact(), tmp_path / "k.json")
    found = load_directory(tmp_path)
    assert found["pm25-test"].version == "10"
    assert set(found) == {"pm25-test", "pm25-koehler"}
