"""Keep the cyclic garbage collector off the objects that existed before a deploy.

A deploy allocates many short-lived objects (traced graphs, nodes, proxies), enough that
CPython runs a full collection of the oldest generation during it, and a full collection
walks *every* tracked object of the process: with torch and timm imported and a model
loaded that is about 400,000 objects and a third of a second here, once per deploy (measured
with ``gc.callbacks`` around ``deploy(timm mobileone_s0, check=False)``: one generation-2
collection, 0.33 s of 2.1 s). :func:`frozen_heap` moves the objects alive at its start into
CPython's permanent generation (:func:`gc.freeze`) for the duration of the block, so
collections during the deploy only walk what the deploy allocated; at the end
:func:`gc.unfreeze` puts them in the oldest generation (where a long-lived object is anyway).
Nothing is kept alive that would have been freed: reference counting frees as always, and
garbage cycles among the frozen objects are collected by the first full collection after the
block.

A process that froze objects itself (``gc.get_freeze_count() > 0``, a pre-fork server) is
left as it is: unfreezing would also unfreeze its objects. The freeze is process-wide: another
thread that calls :func:`gc.freeze` during a deploy has its freeze undone at the deploy's end.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Objects alive now are not walked by collections inside the block."""
    if not gc.isenabled() or gc.get_freeze_count() > 0:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


__all__ = ["frozen_heap"]
