"""Configuration: strict parsing, messages that name the variable, never a silent default."""

from __future__ import annotations

import pytest

from domain.processor import SimulatedProcessor
from service.config import SETTINGS, Config, ConfigError, load
from service.processors import load_processor
from tests.support import processors


def test_defaults_are_specs_defaults() -> None:
    assert load({}) == Config()
    assert (Config().workers, Config().queue_size, Config().error_rate, Config().port) == (4, 64, 20, 8080)


def test_every_setting_is_read_from_its_variable() -> None:
    config = load(
        {
            "WORKERS": "7",
            "QUEUE_SIZE": "1000",
            "ERROR_RATE": "0",
            "HOST": "127.0.0.1",
            "PORT": "9000",
            "WORK_MIN_MS": "0",
            "WORK_MAX_MS": "0",
            "PROCESSOR": "tests.support.processors:scripted",
            "BACKOFF_BASE_MS": "5",
            "BACKOFF_MAX_MS": "50",
            "MAX_BODY_BYTES": "2048",
            "SHUTDOWN_TIMEOUT": "2.5",
            "STORE": "memory",
            "RETAIN_FINISHED": "0",
            "LOG_LEVEL": "debug",
            "ACCESS_LOG": "yes",
        }
    )
    assert config == Config(
        workers=7,
        queue_size=1000,
        error_rate=0,
        host="127.0.0.1",
        port=9000,
        work_min_ms=0,
        work_max_ms=0,
        processor="tests.support.processors:scripted",
        backoff_base_ms=5,
        backoff_max_ms=50,
        max_body_bytes=2048,
        shutdown_timeout=2.5,
        store="memory",
        retain_finished=0,
        log_level="DEBUG",
        access_log=True,
    )


def test_the_table_covers_every_config_field() -> None:
    assert [s.field for s in SETTINGS] == list(Config.__dataclass_fields__)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKERS": "abc"}, "WORKERS='abc': not an integer (expected 1..10000)"),
        ({"WORKERS": "0"}, "WORKERS='0': out of range (expected an integer 1..10000)"),
        ({"WORKERS": "10001"}, "WORKERS='10001': out of range"),
        ({"QUEUE_SIZE": "1e3"}, "QUEUE_SIZE='1e3': not an integer"),
        ({"ERROR_RATE": "3.0"}, "ERROR_RATE='3.0': not an integer (expected 0..100)"),
        ({"ERROR_RATE": "101"}, "ERROR_RATE='101': out of range"),
        ({"PORT": ""}, "PORT='': not an integer"),
        ({"SHUTDOWN_TIMEOUT": "soon"}, "SHUTDOWN_TIMEOUT='soon': not a number of seconds"),
        ({"SHUTDOWN_TIMEOUT": "-1"}, "SHUTDOWN_TIMEOUT='-1': out of range"),
        ({"STORE": "redis://x"}, "STORE='redis://x': unknown store"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD': expected one of DEBUG, INFO"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG='maybe': expected one of 1/0"),
        ({"HOST": "  "}, "HOST is set but empty"),
        ({"PROCESSOR": "no colon"}, "PROCESSOR='no colon': expected a dotted path"),
        ({"WORK_MIN_MS": "600", "WORK_MAX_MS": "500"}, "WORK_MIN_MS=600 is larger than WORK_MAX_MS=500"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    assert message in str(info.value)


def test_an_empty_processor_means_the_simulated_one() -> None:
    assert isinstance(load_processor(load({"PROCESSOR": ""})), SimulatedProcessor)
    assert load_processor(load({"PROCESSOR": "tests.support.processors:scripted"})) is processors.scripted


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.support.nowhere:run", "cannot load it"),
        ("tests.support.processors:missing", "cannot load it"),
        ("tests.support.processors:not_async", "must be an async callable"),
    ],
)
def test_a_processor_that_cannot_run_is_refused(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_processor(load({"PROCESSOR": path}))
