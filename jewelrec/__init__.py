"""jewelrec: photo in, visually similar jewelry from a shop's catalog out.

Public Python API: the `Recommender` (query pipeline), `Home` (a data home on disk) and `Product`.
"""

from jewelrec.catalog.schema import Product
from jewelrec.home import Home

__all__ = ["Home", "Product", "Recommender"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The Recommender pulls in torch; import it lazily so `jewelrec --help` stays fast.
    if name == "Recommender":
        from jewelrec.recommend import Recommender

        return Recommender
    raise AttributeError(name)
