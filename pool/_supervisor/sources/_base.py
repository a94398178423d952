"""The base class of stop sources (see the package docstring for the hooks)."""

__all__ = ("Source",)


class Source:
    """Holds the supervisor it feeds; subclasses define only the hooks they need."""

    worker_messages: dict = {}
    client_messages: dict = {}

    def __init__(self, sup):
        self.sup = sup
