"""An inventory keeps the earlier list answer's objects only where the runtime says the same.

cri/list_reuse.py: a scrape of an unchanged node makes no new PodSandbox,
Container or identity objects; anything the runtime changed (state, attempt, an
id reused for another container, pods gone and new) must show at once. The
fake CRI server because the real runtime cannot reuse an id or change a
container's metadata in place; the ground truth is what the client builds from
the same answer without reuse.
"""
from __future__ import annotations

import copy
from dataclasses import fields

import pytest

from cri_exporter.collectors.inventory_fetch import InventoryFetch
from cri_exporter.cri import CriClient
from cri_exporter.cri import api_pb2 as api
from cri_exporter.inventory import ContainerIdentity, Inventory, PodIdentity
from tests.fakecri import FakeCRI, fleet, make_pod


@pytest.fixture
def node(tmp_path):
    with FakeCRI(tmp_path / "cri.sock", fleet(12, per_pod=3)) as fake:
        client = CriClient(fake.endpoint, timeout=5.0)
        try:
            yield fake, client, InventoryFetch(client)
        finally:
            client.close()


def fresh(client: CriClient) -> Inventory:
    """The inventory built from nothing: what a reused one must equal."""
    return Inventory(client.list_pod_sandboxes(), client.list_containers())


def assert_same_as_fresh(inv: Inventory, client: CriClient) -> None:
    want = fresh(client)
    assert sorted(inv.pods, key=lambda p: p.id) == sorted(want.pods, key=lambda p: p.id)
    assert sorted(inv.containers, key=lambda c: c.id) == sorted(want.containers, key=lambda c: c.id)
    assert inv.current_pods == want.current_pods
    assert inv.current_containers == want.current_containers
    assert inv.older_instances == want.older_instances


def touch(fake: FakeCRI) -> None:
    """The fake caches its answers; changed messages in place need a new answer."""
    fake.set_pods(fake.pods)


def test_an_unchanged_node_makes_no_new_objects(node):
    fake, client, fetch = node
    first = fetch.get(5)
    second = fetch.get(5)
    assert second is not first, "listed again"
    assert all(a is b for a, b in zip(first.pods, second.pods))
    assert all(a is b for a, b in zip(first.containers, second.containers))
    for new, old in ((second.current_pods, first.current_pods), (second.current_containers, first.current_containers)):
        assert list(new) == list(old)
        assert all(a is b for a, b in zip(new, old)), "the identities too"
        assert all(new[k] is old[k] for k in new)
    assert_same_as_fresh(second, client)


def test_a_state_change_shows_and_the_rest_is_kept(node):
    fake, client, fetch = node
    first = fetch.get(5)
    pod = fake.pods[1]
    stopped = pod.containers[0]
    stopped.state = api.CONTAINER_EXITED
    pod.sandbox.state = api.SANDBOX_NOTREADY
    touch(fake)
    second = fetch.get(5)
    by_id = {c.id: c for c in second.containers}
    assert by_id[stopped.id].state == "exited"
    assert by_id[stopped.id] is not next(c for c in first.containers if c.id == stopped.id)
    assert second.pods_by_id[pod.sandbox.id].state == "notready"
    kept = [c for c in second.containers if c.id != stopped.id]
    assert all(c is next(o for o in first.containers if o.id == c.id) for c in kept)
    assert_same_as_fresh(second, client)
    # and back: the object made for the changed answer is not the stale first one
    stopped.state = api.CONTAINER_RUNNING
    touch(fake)
    third = fetch.get(5)
    assert {c.id: c for c in third.containers}[stopped.id].state == "running"
    assert_same_as_fresh(third, client)


def test_a_new_attempt_beside_the_exited_one(node):
    fake, client, fetch = node
    fetch.get(5)
    pod = fake.pods[2]
    old = pod.containers[0]
    old.state = api.CONTAINER_EXITED
    restarted = copy.deepcopy(old)
    restarted.id = "f" * 64
    restarted.metadata.attempt = 1
    restarted.state = api.CONTAINER_RUNNING
    restarted.created_at += 10**9
    pod.containers.append(restarted)
    touch(fake)
    second = fetch.get(5)
    ident = ContainerIdentity(pod.sandbox.metadata.namespace, pod.sandbox.metadata.name, old.metadata.name)
    assert second.current_containers[ident].id == restarted.id
    assert second.current_containers[ident].attempt == 1
    assert [c.id for c in second.older_instances[ident]] == [old.id]
    assert_same_as_fresh(second, client)
    # the same attempt number under the same id, restarted in place (a runtime's own restart)
    restarted.metadata.attempt = 2
    touch(fake)
    third = fetch.get(5)
    assert third.current_containers[ident].attempt == 2
    assert_same_as_fresh(third, client)


@pytest.mark.parametrize("change", [
    "name", "attempt", "pod_sandbox_id", "image", "image_id", "created_at", "pod_label", "container_label",
])
def test_an_id_reused_with_other_metadata_is_a_new_container(node, change):
    fake, client, fetch = node
    fetch.get(5)
    c = fake.pods[0].containers[1]
    if change == "name":
        c.metadata.name = "other"
    elif change == "attempt":
        c.metadata.attempt = 7
    elif change == "pod_sandbox_id":
        c.pod_sandbox_id = fake.pods[3].sandbox.id
    elif change == "image":
        c.image.user_specified_image = "registry.example.com/other:v2"
    elif change == "image_id":
        c.image_id = "sha256:" + "9" * 64
    elif change == "created_at":
        c.created_at += 1
    elif change == "pod_label":
        c.labels["io.kubernetes.pod.name"] = "someone-else"
    elif change == "container_label":
        c.labels["io.kubernetes.container.name"] = "renamed"
    touch(fake)
    second = fetch.get(5)
    assert_same_as_fresh(second, client)


@pytest.mark.parametrize("change", ["name", "namespace", "uid", "attempt", "created_at", "handler", "label"])
def test_a_sandbox_id_reused_with_other_metadata_is_a_new_pod(node, change):
    fake, client, fetch = node
    fetch.get(5)
    sb = fake.pods[0].sandbox
    if change == "name":
        sb.metadata.name = "other"
        del sb.labels["io.kubernetes.pod.name"]
    elif change == "namespace":
        sb.metadata.namespace = "elsewhere"
    elif change == "uid":
        sb.labels["io.kubernetes.pod.uid"] = sb.metadata.uid = "00000000-0000-4000-8000-000000000000"
    elif change == "attempt":
        sb.metadata.attempt = 3
    elif change == "created_at":
        sb.created_at += 1
    elif change == "handler":
        sb.runtime_handler = "kata"
    elif change == "label":
        sb.labels["io.kubernetes.pod.namespace"] = "labelled-elsewhere"
    touch(fake)
    second = fetch.get(5)
    assert_same_as_fresh(second, client)
    assert second.pods_by_id[sb.id] is not None


def test_a_pod_removed_and_another_added(node):
    fake, client, fetch = node
    first = fetch.get(5)
    gone = fake.pods[0]
    added = make_pod(99, 3, seed="new")
    fake.set_pods(fake.pods[1:] + [added])
    second = fetch.get(5)
    assert gone.sandbox.id not in second.pods_by_id
    assert not {c.id for c in gone.containers} & {c.id for c in second.containers}
    assert PodIdentity(gone.sandbox.metadata.namespace, gone.sandbox.metadata.name) not in second.current_pods
    assert second.current_pods[PodIdentity(added.sandbox.metadata.namespace, added.sandbox.metadata.name)].id == \
        added.sandbox.id
    assert {c.id for c in added.containers} <= {c.id for c in second.containers}
    assert_same_as_fresh(second, client)
    # the pod the runtime reuses the id of for another pod (a sandbox id reused)
    again = make_pod(100, 2, seed="again")
    again.sandbox.id = gone.sandbox.id
    for c in again.containers:
        c.pod_sandbox_id = gone.sandbox.id
    fake.set_pods(fake.pods + [again])
    third = fetch.get(5)
    assert third.pods_by_id[gone.sandbox.id].name == again.sandbox.metadata.name
    assert_same_as_fresh(third, client)
    assert len(first.pods) == len(fake.pods) - 1


def test_every_field_of_the_models_is_compared():
    """A field added to the models must be added to list_reuse's comparisons
    (and to these tests): else an entry differing only there would be reused stale."""
    from cri_exporter.cri import model

    assert [f.name for f in fields(model.Container)] == [
        "id", "pod_sandbox_id", "name", "attempt", "image", "image_id", "state", "created_at_ns", "labels"]
    assert [f.name for f in fields(model.PodSandbox)] == [
        "id", "name", "namespace", "uid", "attempt", "state", "created_at_ns", "labels", "runtime_handler"]
