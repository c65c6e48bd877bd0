import dataclasses
import re
import subprocess

import pytest

from gateway import config
from gateway.errors import ConfigError
from tests.conftest import BUSGATE, REPO, write_config

SHIPPED = REPO / "conf" / "busgate.toml"


def test_embedded_defaults_work_without_a_file(monkeypatch):
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    settings = config.load()
    assert settings.topic_prefix == "org.debian.dev"
    assert settings.zmq.publish.startswith("tcp://127.0.0.1:")
    assert settings.db_path.name == "busgate.sqlite"
    assert not settings.smtp.enabled and not settings.debbugs.enabled


def test_shipped_file_loads_and_equals_the_defaults():
    settings = config.load(SHIPPED)
    assert dataclasses.replace(settings, loaded_from=()) == config.Settings()


def _documented_keys() -> set[str]:
    keys, section = set(), ""
    for line in SHIPPED.read_text().splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            section = m.group(1) + "."
        elif m := re.match(r"#?\s*(\w+) = ", line):
            keys.add(section + m.group(1))
    return keys


def _all_keys() -> set[str]:
    """The core's keys and every registered source's table's (through the registry)."""
    keys = set()
    defaults = config.Settings()
    values = [(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(config.Settings)
              if f.name not in ("sources", "loaded_from")]
    for name, default in values + list(defaults.sources.items()):
        if dataclasses.is_dataclass(default):
            keys |= {f"{name}.{sub.name}" for sub in dataclasses.fields(default)}
        else:
            keys.add(name)
    return keys


def test_every_key_is_documented_in_the_shipped_file():
    missing = _all_keys() - _documented_keys()
    assert not missing, f"keys not documented in conf/busgate.toml: {sorted(missing)}"
    assert not _documented_keys() - _all_keys()


def test_dropins_override_in_name_order(tmp_path):
    main = write_config(tmp_path / "busgate.toml", {"env": "stg", "zmq": {"sndhwm": 5}})
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.toml").write_text("[zmq]\nsndhwm = 50\n")
    (tmp_path / "conf.d" / "20-b.toml").write_text("[zmq]\nsndhwm = 500\n[smtp]\nenabled = true\n"
                                                     'recipients = ["dak@localhost"]\n')
    settings = config.load(main)
    assert settings.env == "stg"
    assert settings.zmq.sndhwm == 500
    assert settings.zmq.hwm_wait_ms == 200
    assert settings.smtp.enabled
    assert len(settings.loaded_from) == 3


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[zmq]\nsndhwmm = 3\n", "zmq.sndhwmm", "unknown key"),
        ("[zmq]\nsndhwm = \"many\"\n", "zmq.sndhwm", "must be an integer"),
        ("[zmq]\nsndhwm = 0\n", "zmq.sndhwm", "greater than 0"),
        ("zmq = 3\n", "zmq", "must be a table"),
        ('env = "prod"\n', "env", "not one of"),
        ('distribution = "De bian"\n', "distribution", "lowercase"),
        ("[smtp]\nenabled = 1\n", "smtp.enabled", "true or false"),
        ("[discovery]\nsrv_domains = \"x\"\n", "discovery.srv_domains", "list of strings"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, text, key, message):
    path = tmp_path / "busgate.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert err.value.path == str(path)
    assert message in str(err.value)


def test_error_in_a_dropin_names_the_dropin(tmp_path):
    main = write_config(tmp_path / "busgate.toml", {"env": "dev"})
    (tmp_path / "conf.d").mkdir()
    bad = tmp_path / "conf.d" / "50-local.toml"
    bad.write_text("[state]\nspool_poll_ms = -1\n")
    with pytest.raises(ConfigError) as err:
        config.load(main)
    assert err.value.path == str(bad)


def test_invalid_toml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[zmq\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(broken)
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.toml")


def test_check_config_prints_effective_settings_and_exits_2_on_error(tmp_path):
    good = write_config(tmp_path / "good.toml", {"env": "stg", "zmq": {"sndhwm": 42}})
    out = subprocess.run([*BUSGATE, "check-config", "--config", str(good)],
                         capture_output=True, text=True, check=True).stdout
    assert 'env = "stg"' in out and "sndhwm = 42" in out and str(good) in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[zmq]\nbogus = 1\n")
    result = subprocess.run([*BUSGATE, "check-config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{bad}: zmq.bogus: unknown key" in result.stderr
    assert result.stdout == ""


def test_a_lazy_load_reads_source_tables_only_when_asked(tmp_path):
    """The MTA pipe's load (sources=False) neither loads the registry nor checks a source's
    table until it is asked for; then a bad key is the same error as ever."""
    path = write_config(tmp_path / "busgate.toml", {"mail": {"max_size": 1000},
                                                    "debbugs": {"bogus": 1}})
    settings = config.load(path, sources=False)
    assert settings.mail.max_size == 1000
    with pytest.raises(ConfigError) as err:
        settings.debbugs  # noqa: B018
    assert (err.value.path, err.value.key) == (str(path), "debbugs.bogus")
    with pytest.raises(ConfigError):
        config.load(path)
