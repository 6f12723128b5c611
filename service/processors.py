"""Choose the processor: the simulated one, or the user's `PROCESSOR=module:name`."""

from __future__ import annotations

import importlib
import inspect

from domain.processor import Processor, SimulatedProcessor
from service.config import Config, ConfigError


def load_processor(config: Config) -> Processor:
    if config.processor is None:
        return SimulatedProcessor(
            min_ms=config.work_min_ms, max_ms=config.work_max_ms, error_rate=config.error_rate
        )
    module_name, _, attr_path = config.processor.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"PROCESSOR={config.processor!r}: cannot load it ({exc})") from None
    call = getattr(target, "__call__", None)  # noqa: B004 - we need the bound __call__ to inspect it
    if not (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call)):
        raise ConfigError(f"PROCESSOR={config.processor!r}: must be an async callable taking an Attempt")
    return target  # type: ignore[return-value]
