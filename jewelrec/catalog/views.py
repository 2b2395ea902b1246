"""Which images train and index, and which are held out as evaluation queries.

A product with several images (views of the same piece) keeps its last view out of training and
out of the evaluation index; `jewelrec evaluate` uses those views as shopper photos whose right
answer is known. Products with one image are never held out. Deterministic: no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence

from jewelrec.catalog.schema import Product

View = tuple[Product, str]  # a product and one of its managed image names


def split_views(products: Sequence[Product]) -> tuple[list[View], list[View]]:
    """(fit views, held-out query views)."""
    fit: list[View] = []
    held_out: list[View] = []
    for product in products:
        images = list(dict.fromkeys(product.images))
        if len(images) >= 2:
            fit.extend((product, image) for image in images[:-1])
            held_out.append((product, images[-1]))
        else:
            fit.extend((product, image) for image in images)
    return fit, held_out


def all_views(products: Sequence[Product]) -> list[View]:
    return [(p, image) for p in products for image in dict.fromkeys(p.images)]
