"""Which images train and index, and which are held out as evaluation queries.

A product with several images (views of the same piece) keeps its last view out of training and
out of the evaluation index; `jewelrec evaluate` uses those views as shopper photos whose right
answer is known. Products with one image are never held out. Images ingest flagged (a shared
"coming soon" placeholder, a size chart in every gallery) are left out first, so a product
whose gallery is [placeholder, photo] keeps its one real photo for training. Deterministic: no
randomness.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from jewelrec.catalog.schema import Product

View = tuple[Product, str]  # a product and one of its managed image names


def split_views(
    products: Sequence[Product], excluded: Collection[tuple[str, str]] = frozenset()
) -> tuple[list[View], list[View]]:
    """(fit views, held-out query views), the `excluded` (product id, image) views left out
    before the split (hygiene.excluded_views: held out after, a product whose placeholder came
    first lost its only real photo to the held-out side and was never trained on)."""
    fit: list[View] = []
    held_out: list[View] = []
    for product in products:
        images = [image for image in dict.fromkeys(product.images)
                  if (product.id, image) not in excluded]
        if len(images) >= 2:
            fit.extend((product, image) for image in images[:-1])
            held_out.append((product, images[-1]))
        else:
            fit.extend((product, image) for image in images)
    return fit, held_out


def all_views(products: Sequence[Product]) -> list[View]:
    return [(p, image) for p in products for image in dict.fromkeys(p.images)]
