"""Sensor pages stay true: every registered sensor has a README in its folder that covers what
the registry says about it, and the shell, Python and TOML blocks of the sensor docs run."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge import plugins
from edge.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HEADINGS = ("Protocol", "Quantities", "What the gateway sends", "Options", "Quirks", "Emulator",
            "Vectors")
SENSOR_DOCS = ("docs/sensors.md", "docs/adding-a-sensor.md")


def _folder(sensor: plugins.Sensor) -> Path:
    package = sensor.descriptor.decoder.__module__.rpartition(".")[0]
    init = importlib.import_module(package).__file__
    assert init is not None
    return Path(init).parent


def _readme(name: str) -> str:
    path = _folder(plugins.sensor(name)) / "README.md"
    assert path.is_file(), f"{name}: no README.md in its folder"
    return path.read_text(encoding="utf-8")


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


SENSORS = sorted(plugins.sensors())


@pytest.mark.parametrize("name", SENSORS)
def test_every_sensor_folder_has_a_readme_with_the_sections(name: str) -> None:
    text = _readme(name)
    headings = re.findall(r"^## (.+)$", text, re.M)
    wanted = (*HEADINGS, "Wiring") if plugins.sensor(name).descriptor.interface == "serial" \
        else HEADINGS
    for heading in wanted:
        assert heading in headings, f"{name}/README.md lacks '## {heading}'"
    assert text.startswith(f"# `{name}` — "), "title: # `type` — what it is"


@pytest.mark.parametrize("name", SENSORS)
def test_readme_covers_quantities_units_probe_poll_and_options(name: str) -> None:
    from edge.quantities import QUANTITIES

    text = _readme(name)
    sensor = plugins.sensor(name)
    desc = sensor.descriptor
    for code in desc.quantities:
        assert f"`{code}`" in text or f"{code}," in text or f" {code} " in text, code
        assert QUANTITIES[code].unit in text, f"{code}: unit {QUANTITIES[code].unit}"
    for raw in (desc.probe, desc.commands.poll or b""):
        if raw:
            assert raw.hex(" ") in text or f"`{raw.decode('ascii', 'replace')}`" in text, raw
    if desc.interface == "serial":
        for key in sensor.options.model_fields:
            if key not in plugins.SerialOptions.model_fields:
                assert f"`{key}`" in text, f"option {key} undocumented"


@pytest.mark.parametrize("name", SENSORS)
def test_readme_links_resolve_and_toml_examples_validate(name: str) -> None:
    folder = _folder(plugins.sensor(name))
    text = _readme(name)
    for target in re.findall(r"\]\(([^)\s#]+)", text):
        if "://" not in target:
            assert (folder / target).exists(), target
    for block in _blocks(text, "toml"):
        config = parse_config('[gateway]\nid = "gw-doc"\n' + block, source=f"{name}/README.md")
        assert {s.type for s in config.sources} == {name}


def _run(command: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a documented command from the repository root, with this venv's ``.venv/bin`` and
    the emulator links of the examples inside ``tmp_path``."""
    command = re.sub(r"(?<![\w/])\.venv/bin/", f"{BIN}/", command)
    command = command.replace("/tmp/duet-", f"{tmp_path}/duet-")
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def _sh_lines() -> list[tuple[str, str]]:
    out = []
    for doc in SENSOR_DOCS:
        for block in _blocks((ROOT / doc).read_text(encoding="utf-8"), "sh"):
            out += [(doc, line) for line in block.splitlines()
                    if line.strip() and not line.startswith("#")]
    return out


@pytest.mark.parametrize(("doc", "line"), _sh_lines())
def test_shell_blocks_of_the_sensor_docs_run_as_written(doc: str, line: str,
                                                        tmp_path: Path) -> None:
    result = _run(line, tmp_path)
    assert result.returncode == 0, f"{doc}: {line}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr


def test_the_sensors_command_in_the_docs_names_every_sensor(tmp_path: Path) -> None:
    (line,) = [cmd for doc, cmd in _sh_lines()
               if doc == "docs/sensors.md" and "--json" in cmd]
    assert _run(line, tmp_path).stdout.split() == SENSORS


def _python_blocks() -> list[tuple[str, str]]:
    docs = [ROOT / d for d in SENSOR_DOCS]
    docs += [_folder(plugins.sensor(n)) / "README.md" for n in SENSORS]
    return [(str(p.relative_to(ROOT)), block) for p in docs if p.exists()
            for block in _blocks(p.read_text(encoding="utf-8"), "python")]


@pytest.mark.parametrize(("doc", "block"), _python_blocks())
def test_python_blocks_run(doc: str, block: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block.replace("/tmp/duet-", f"{tmp_path}/duet-"), encoding="utf-8")
    result = _run(f"{sys.executable} {script}", tmp_path)
    assert result.returncode == 0, f"{doc}\n{result.stderr}"


def test_adding_a_sensor_shows_the_commit_that_touched_one_folder(tmp_path: Path) -> None:
    """The commit that added edge/sensors/pm1006 lists that folder and tests, nothing else,
    and docs/adding-a-sensor.md shows that commit's files."""
    shallow = _run("git rev-parse --is-shallow-repository", tmp_path)
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        pytest.skip("needs the git history (not a shallow clone)")
    doc = (ROOT / "docs" / "adding-a-sensor.md").read_text(encoding="utf-8")
    (line,) = [cmd for d, cmd in _sh_lines() if d == "docs/adding-a-sensor.md"
               and cmd.startswith("git show")]
    real = _run(line, tmp_path)
    assert real.returncode == 0, real.stderr

    def files(text: str) -> list[str]:
        return re.findall(r"^ (\S+) +\| ", text, re.M)

    touched = files(real.stdout)
    assert {f"edge/sensors/pm1006/{n}" for n in
            ("__init__.py", "codec.py", "emulator.py", "vectors.json", "README.md")} <= set(touched)
    assert all(f.startswith(("edge/sensors/pm1006/", "tests/")) for f in touched), touched
    shown = doc.split("<!-- one-folder:stat -->", 1)[1]
    assert files(_blocks(shown, "text")[0]) == touched
