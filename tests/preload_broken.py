"""A module whose import raises: preload= must say which and why."""

raise RuntimeError("this module cannot be imported")
