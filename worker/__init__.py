"""The RunPod side of podenv: the warm-loading handler and its model plugins.

This package runs under the release env's own python (``podenv boot --exec``), not under
podenv's: it imports only the standard library, the runpod SDK (and pydantic, which the SDK
brings) and, inside each plugin, that plugin's model library.
"""
