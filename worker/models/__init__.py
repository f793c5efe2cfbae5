"""The plugins a release can name (the ``plugin`` of its model layers), imported only when used."""

from importlib import import_module

from worker.models.base import Plugin

PLUGINS = {
    "demo": "worker.models.demo:DemoPlugin",
    "f5_tts": "worker.models.f5_tts:F5TTSPlugin",
    "whisperx": "worker.models.whisperx:WhisperXPlugin",
}


class UnknownPluginError(LookupError):
    pass


def plugin_class(name: str) -> type[Plugin]:
    """The plugin class registered as ``name``; importing it imports its model library."""
    try:
        module_name, class_name = PLUGINS[name].split(":")
    except KeyError:
        known = ", ".join(sorted(PLUGINS))
        raise UnknownPluginError(
            f"the release names plugin '{name}', which this worker lacks (has: {known})."
        ) from None
    return getattr(import_module(module_name), class_name)
