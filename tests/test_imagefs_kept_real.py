"""ImageFsInfo and ListImages asked at most once every --image-interval (kept_answer.py),
on a real containerd of the test's own: a change to the image store shows within the
interval, the values served are the runtime's answer, a kept answer goes when the
runtime restarts, and a runtime that stops answering fails the collector as before."""
from __future__ import annotations

import subprocess
import time

import pytest

from cri_exporter.cri import CriClient
from crilab import BUSYBOX_IMAGE, import_images
from tests.exporter_proc import ExporterProcess, wait_for

pytestmark = pytest.mark.containerd

COLLECTORS = ("--collectors", "runtime,imagefs")


def _ctr(victim, *args: str) -> None:
    subprocess.run([str(victim.version.bin_dir() / "ctr"), "-a", victim.socket_path, "-n", "k8s.io", *args],
                   check=True, capture_output=True)


def _remove_busybox(victim) -> None:
    """The agent's CRI descriptor has no RemoveImage (least privilege): ctr removes it,
    and CRI's image store follows containerd's image events."""
    cri = CriClient(victim.endpoint)
    try:
        image = next(i for i in cri.list_images() if BUSYBOX_IMAGE in i.tags)
        # CRI keeps an image by its id too: both references go, as crictl rmi removes them.
        _ctr(victim, "images", "rm", "--sync", BUSYBOX_IMAGE, image.id)
        wait_for(lambda: len(cri.list_images()) == 1, what="CRI to see the image removed")
    finally:
        cri.close()


def _images_as_cri_says(s, images) -> bool:
    """False too while the families are absent (the runtime coming back: the agent's
    channel reconnects with a back-off, and the collector fails until then)."""
    return (bool(s.find("cri_images"))
            and s.get1("cri_images") == len(images)
            and s.get1("cri_images_size_bytes") == sum(i.size_bytes for i in images)
            and s.get1("cri_images_pinned") == sum(1 for i in images if i.pinned))


def _scrape_agreeing(exp, images):
    """A scrape serving `images`' figures, else None (for wait_for)."""
    s = exp.scrape()
    return s if _images_as_cri_says(s, images) else None


def test_image_removed_and_imported_show_within_the_interval(victim):
    cri = CriClient(victim.endpoint)
    try:
        with ExporterProcess(victim.endpoint, *COLLECTORS, "--image-interval", "1") as exp:
            images = cri.list_images()
            assert len(images) == 2
            wait_for(lambda: _images_as_cri_says(exp.scrape(), images), what="the lab's two images")

            _remove_busybox(victim)
            images = cri.list_images()
            assert len(images) == 1
            wait_for(lambda: _images_as_cri_says(exp.scrape(), images), what="the removed image gone")

            import_images(victim.socket_path, victim.cache_dir, ctr=str(victim.version.bin_dir() / "ctr"))
            images = cri.list_images()
            assert len(images) == 2
            s = wait_for(lambda: _scrape_agreeing(exp, images),
                         what="the imported image back")
            assert s.get1("cri_scrape_collector_success", collector="imagefs") == 1
            assert s.get1("cri_images_list_age_seconds") >= 0
            assert s.get1("cri_imagefs_info_age_seconds") >= 0
    finally:
        cri.close()


def test_kept_answer_served_until_restart_and_never_when_runtime_is_gone(victim):
    cri = CriClient(victim.endpoint)
    try:
        with ExporterProcess(victim.endpoint, *COLLECTORS, "--image-interval", "3600") as exp:
            images = cri.list_images()
            first = wait_for(lambda: _scrape_agreeing(exp, images),
                             what="the lab's two images")
            fs = cri.image_fs_info()
            labels = {"fs": "image", "mountpoint": fs[0].mountpoint}
            assert first.find("cri_imagefs_used_bytes", **labels)
            assert first.find("cri_imagefs_capacity_bytes", **labels)  # statvfs, read every scrape

            # Within the interval the kept answer is served, older at each scrape.
            _remove_busybox(victim)
            assert len(cri.list_images()) == 1
            kept = exp.scrape()
            assert _images_as_cri_says(kept, images)
            assert kept.get1("cri_images_list_age_seconds") >= first.get1("cri_images_list_age_seconds")
            assert kept.get1("cri_imagefs_info_age_seconds") >= first.get1("cri_imagefs_info_age_seconds")

            # A restarted runtime binds a new socket: it is asked again at once.
            before_restart = time.time()
            victim.restart()  # imports the lab images again
            images = cri.list_images()
            assert len(images) == 2
            # (waited for: the agent's channel may still be reconnecting; a kept answer from before
            # the restart would agree too, and its age says it is not one)
            s = wait_for(lambda: _scrape_agreeing(exp, images), what="the restarted runtime's answer")
            assert s.get1("cri_images_list_age_seconds") <= time.time() - before_restart
            assert s.get1("cri_imagefs_info_age_seconds") <= time.time() - before_restart

            # A stopped runtime: nothing kept is served, the collector fails as when asked every scrape.
            victim.stop()
            s = exp.scrape()
            assert s.get1("cri_up") == 0
            assert s.get1("cri_scrape_collector_success", collector="imagefs") == 0
            for name in ("cri_images", "cri_images_size_bytes", "cri_images_list_age_seconds",
                         "cri_imagefs_used_bytes", "cri_imagefs_info_age_seconds"):
                assert not s.find(name), name

            victim.start()
            images = cri.list_images()
            s = wait_for(lambda: _scrape_agreeing(exp, images), what="the runtime's answer after it came back")
            assert s.get1("cri_scrape_collector_success", collector="imagefs") == 1
    finally:
        cri.close()
