"""The core: event bus, state machine, registries, services, plugin manager, configuration.

The core never imports a plugin; plugins reach the core through hooks and the `Hub`.
"""
