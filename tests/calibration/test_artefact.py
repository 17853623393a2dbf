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


def _legacy_koehler_file(path: Path) -> Path:
    """A schema-1 artefact as the previous tool wrote it (κ in the mass form, ρ = 1.65)."""
    import hashlib

    from calibration.artefact import canonical_json

    body = {
        "schema": "duet-edge/calibration/1", "id": "old-koehler", "version": "3",
        "quantity": "pm2_5", "sensor": {"model": "SDS011", "serial": ""},
        "inputs": [{"name": "signal", "quantity": "pm2_5", "range": [0.0, 200.0]},
                   {"name": "rh", "quantity": "humidity", "range": [20.0, 90.0]}],
        "model": {"type": "chain", "steps": [
            {"type": "koehler", "kappa": 0.33, "rh_input": 1, "rh_clamp": [0.0, 95.0]},
            {"type": "linear", "intercept": 1.0, "terms": [
                {"input": 0, "transform": "identity", "coef": 0.9}],
             "target_transform": "identity"}]},
        "fit": {"period_start": None, "period_end": None, "reference_station": "", "n_samples": 0,
                "averaging_s": None, "metrics": {}, "validation": {},
                "tool": "duet-edge calibrate"},
    }
    body["sha256"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    path.write_text(json.dumps(body))
    return path


def test_schema_1_artefacts_load_migrated_with_identical_values(tmp_path: Path) -> None:
    from calibration.artefact import compile_artefact
    from calibration.models import ChainModel, KoehlerModel

    old = _legacy_koehler_file(tmp_path / "old.json")
    loaded = load_artefact(old)
    assert loaded.schema_ == "duet-edge/calibration/2"
    assert isinstance(loaded.model, ChainModel) and isinstance(loaded.model.steps[0], KoehlerModel)
    assert loaded.model.steps[0].kappa == pytest.approx(0.2)  # 0.33 / 1.65
    assert loaded.fit.validation["migrated_from"]["schema"] == "duet-edge/calibration/1"
    # what the old gateway computed: 1 + 0.9 · 30 / (1 + (0.33/1.65)/(100/80 − 1))
    old_value = 1.0 + 0.9 * 30.0 / (1.0 + (0.33 / 1.65) / (100.0 / 80.0 - 1.0))
    assert compile_artefact(loaded).apply([30.0, 80.0])[0] == pytest.approx(old_value, rel=1e-12)
    # a tampered legacy file is still refused
    data = json.loads(old.read_text())
    data["model"]["steps"][0]["kappa"] = 0.5
    old.write_text(json.dumps(data))
    with pytest.raises(ArtefactError, match="sha256 mismatch"):
        load_artefact(old)


def test_ids_with_plus_are_valid() -> None:
    assert make_artefact(art_id="rw-koehler+linear").id == "rw-koehler+linear"
