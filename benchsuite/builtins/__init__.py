"""The built-in plugins, registered through the same loader as third-party ones."""
