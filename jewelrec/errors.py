"""Errors a user can act on. The CLI and the server turn these into messages, never tracebacks."""


class JewelrecError(Exception):
    """Base class: something the user or operator can fix (bad input, missing step)."""


class ImageError(JewelrecError):
    """An image could not be read: empty, truncated, corrupt, not an image, or too large."""


class CatalogError(JewelrecError):
    """A catalog file cannot be read at all (not one bad row: those are rejections)."""


class NotReadyError(JewelrecError):
    """A stage needs an earlier one first (e.g. `recommend` before `train`/`index`)."""


class StorageError(JewelrecError, OSError):
    """A file in the data home could not be written or read: the disk is full, the home is
    read-only, a permission is missing. Also an OSError, so code that already handles OSError
    (an optional cache write) keeps doing so; the message names the path and the cause."""


class BackendUnavailableError(JewelrecError):
    """The search backend (a Milvus server) cannot be reached or cannot answer right now: the
    request was fine and may be asked again (the server answers 503 with Retry-After)."""


class UnknownProductError(JewelrecError, KeyError):
    """No product with this id in the catalog (pruned since, or mistyped). A KeyError too, for
    callers that caught the bare KeyError this used to be."""

    def __str__(self) -> str:  # KeyError would quote the message as a repr
        return str(self.args[0]) if self.args else "unknown product"
