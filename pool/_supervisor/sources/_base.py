"""The base class of stop sources. Owns nothing but the link to the supervisor each source
feeds; the hooks a source may define are listed in the package docstring."""

__all__ = ("Source",)


class Source:
    """Holds the supervisor it feeds; subclasses define only the hooks they need."""

    worker_messages: dict = {}
    client_messages: dict = {}

    def __init__(self, sup):
        self.sup = sup
