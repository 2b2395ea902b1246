"""One immutable snapshot of what a query reads: the catalog store, the embedder, the type
classifier, the index, its version and its metadata.

A request captures the Recommender's snapshot once and uses nothing else, so a new index or
new models published meanwhile can never be mixed into an answer (issue 10, finding 1: a
reload that swapped the embedder, the classifier and the index one at a time served queries
embedded by one model against an index built by another). The Recommender builds a complete
new snapshot first and then swaps its single reference, which is atomic in Python.

Each snapshot's models run on the snapshot's own backbone runtime (models/backbone.py), bound to
its home's ONNX file: two homes opened in one process never share one, and a reload that loads
new models gives them a new backbone while requests in flight finish on the old one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import NotReadyError
from jewelrec.home import FP32, Home
from jewelrec.models.attributes import AttributeHeads, load_attributes
from jewelrec.models.backbone import Backbone
from jewelrec.models.base import (
    Embedder,
    TypeClassifier,
    load_classifier,
    load_embedder,
    model_folder,
)
from jewelrec.search.backends import open_index
from jewelrec.search.index import Index
from jewelrec.search.recognition import load_reference

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything one query reads, loaded together and never changed afterwards."""

    store: CatalogStore
    embedder: Embedder
    classifier: TypeClassifier
    index: Index
    index_version: str | None = None
    index_meta: Mapping[str, Any] = field(default_factory=dict)
    # identifies the classifier's files, so a reload notices a retrained classifier
    classifier_fingerprint: str | None = None
    # the catalog's reference features for "is this jewelry?" (search/recognition.py), when
    # the index measured them in the backbone's space
    recognition_reference: np.ndarray | None = None
    # metal / stone heads read from the photo, when `train` could fit them (models/attributes.py)
    attributes: AttributeHeads | None = None
    # the runtime the models above run on (None: models handed over in memory, each their own)
    backbone: Backbone | None = None

    def __post_init__(self) -> None:
        # a read-only view: nobody can edit the metadata of a snapshot others are reading
        object.__setattr__(self, "index_meta", MappingProxyType(dict(self.index_meta)))


def _check_embedder_matches(home: Home, version: str, name: str, meta: Mapping[str, Any]) -> None:
    """NotReadyError when the embedder was retrained after the index was built: its vectors
    and a photo's would no longer compare (after new products, not even in length), and every
    query would fail. The index is built again with the new embedder; until then the running
    servers keep the snapshot they have."""
    from jewelrec.indexing import model_fingerprint
    from jewelrec.models.weights import CONFIG_FILE, WEIGHTS_FILE

    recorded = meta.get("embedder_fingerprint")
    folder = model_folder(home.models_dir, "embedder", name)
    # a folder missing its files is no retrained model: loading it says to train
    complete = all((folder / part).is_file() for part in (CONFIG_FILE, WEIGHTS_FILE))
    if recorded and meta.get("embedder") == name and complete \
            and model_fingerprint(folder) != recorded:
        raise NotReadyError(
            f"the {name} embedder was retrained after index {version} was built, so the index "
            f"does not match it: run `{home.command('index')}`")


def classifier_fingerprint(home: Home, name: str) -> str | None:
    """The classifier's files' fingerprint (None when it has no folder in this home)."""
    from jewelrec.indexing import model_fingerprint

    folder = model_folder(home.models_dir, "classifier", name)
    return model_fingerprint(folder) if folder.is_dir() else None


def load_snapshot(
    home: Home,
    version: str,
    *,
    store: CatalogStore,
    classifier_name: str,
    embedder_name: str | None = None,
    backend: str | None = None,
    milvus_uri: str | None = None,
    previous: Snapshot | None = None,
) -> Snapshot:
    """A complete snapshot of index `version`. It reuses `previous`'s models and backbone when
    the index was built with the same embedder files and the classifier's files have not
    changed (a new index only); otherwise every model is loaded anew on a new backbone for
    `home`, so the models of one snapshot always share one runtime and `previous` is untouched."""
    index, meta = open_index(home, version=version, backend=backend, milvus_uri=milvus_uri)
    name = embedder_name or meta.get("embedder") or home.settings().embedder
    _check_embedder_matches(home, version, name, meta)
    fingerprint = classifier_fingerprint(home, classifier_name)
    # queries compute as the index's vectors were computed (an index from before the choice
    # existed was float)
    precision = meta.get("precision", FP32)
    same_models = (
        previous is not None
        and meta.get("embedder") == previous.index_meta.get("embedder")
        and meta.get("embedder_fingerprint") == previous.index_meta.get("embedder_fingerprint")
        and fingerprint == previous.classifier_fingerprint
        and precision == previous.index_meta.get("precision", FP32)
    )
    if same_models and previous is not None:
        embedder, classifier = previous.embedder, previous.classifier
        backbone = previous.backbone or Backbone.for_home(home, precision)
    else:
        backbone = Backbone.for_home(home, precision)
        embedder = load_embedder(home.models_dir, name, backbone=backbone)
        classifier = load_classifier(home.models_dir, classifier_name, backbone=backbone)
    return Snapshot(
        store=store,
        embedder=embedder,
        classifier=classifier,
        index=index,
        index_version=version,
        index_meta=meta,
        classifier_fingerprint=fingerprint,
        recognition_reference=load_reference(home, version, meta),
        attributes=load_attributes(home.models_dir, backbone=backbone),
        backbone=backbone,
    )
