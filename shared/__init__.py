"""Code that two or more rtml services use: settings, the NATS bus, logging, metrics, the service runtime."""

__version__ = "0.1.0"
