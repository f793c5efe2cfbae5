"""podenv: locked GPU environments shipped as verified artifacts to serverless workers."""

__version__ = "0.2.0"
