"""Whether a list answer's entry says, field for field, what an earlier model object says.

Every scrape lists the runtime's sandboxes and containers, and a node's lists
hardly change between scrapes. Built anew, each scrape's PodSandbox and Container
objects (their ints, label dicts, the inventory's identities: some 1.8 MB of
small objects at 5,000 containers) were made among the scrape's temporaries and
kept until the next scrape, so each scrape left them scattered over pymalloc's
arenas and the freed temporaries around them could not be given back: about
10 MB free but held at rest (docs/performance.md, "Free-but-held memory").

So the client compares an entry with the earlier object of the same id and
returns that object when every field the model keeps would be built equal:
the object is then exactly what building it would give, and a runtime that
reuses an id, a state change or a new attempt makes a new object. The
comparisons read the protobuf message into temporaries only (freed at once).
"""
from __future__ import annotations

from cri_exporter.cri import model


def same_sandbox(old: model.PodSandbox, p, state: str) -> bool:
    """`p` (a runtime.v1 PodSandbox) builds a PodSandbox equal to `old`
    (client.list_pod_sandboxes: `state` is the answer's state, named)."""
    if (old.state is not state and old.state != state) or old.created_at_ns != p.created_at:
        return False
    md = p.metadata
    if (old.attempt != md.attempt or old.name != md.name or old.namespace != md.namespace or old.uid != md.uid
            or old.runtime_handler != p.runtime_handler):
        return False
    # client._sandbox_labels keeps a label only where it differs from the metadata.
    labels, kept = p.labels, old.labels
    for key, meta in ((model.LABEL_POD_NAME, old.name), (model.LABEL_POD_NAMESPACE, old.namespace),
                      (model.LABEL_POD_UID, old.uid), (model.LABEL_CONTAINER_NAME, None)):
        v = labels.get(key)
        if kept.get(key) != (None if v is None or v == meta else v):
            return False
    return True


def same_container(old: model.Container, c, state: str) -> bool:
    """`c` (a runtime.v1 Container) builds a Container equal to `old`
    (client.list_containers)."""
    if (old.state is not state and old.state != state) or old.created_at_ns != c.created_at:
        return False
    md = c.metadata
    if old.attempt != md.attempt or old.name != md.name or old.pod_sandbox_id != c.pod_sandbox_id:
        return False
    image = c.image
    if old.image != (image.user_specified_image or image.image) or old.image_id != (c.image_id or c.image_ref):
        return False
    # client._container_labels keeps the pod's three labels and a container-name
    # label only where it differs from the metadata name.
    labels, kept = c.labels, old.labels
    get = labels.get
    cname = get(model.LABEL_CONTAINER_NAME)
    return (kept.get(model.LABEL_POD_NAME) == get(model.LABEL_POD_NAME)
            and kept.get(model.LABEL_POD_NAMESPACE) == get(model.LABEL_POD_NAMESPACE)
            and kept.get(model.LABEL_POD_UID) == get(model.LABEL_POD_UID)
            and kept.get(model.LABEL_CONTAINER_NAME) == (None if cname == old.name else cname))
