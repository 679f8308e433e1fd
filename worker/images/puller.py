"""The images a node's tasks need: found in the store, or pulled from their registry first.

As a Swarm worker does, a node pulls a task's image when it does not have it: by digest when
the service pinned one (so every replica runs the same bits), by tag otherwise; with the
credentials the service carries (`--with-registry-auth`), else with the node's own logins,
else anonymously. Tasks that need the same image at the same time share one pull: the first
starts it, the others wait for it, and a waiter that goes away (its task removed) does not
cancel the pull for the rest.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Mapping

from .auth import Credentials
from .image import Image
from .nodeclient import auth_override
from .pull import pull
from .registry import RegistryClient, RegistryError, RegistryNotFound
from .store import ImageStore

log = logging.getLogger("shoal.images")

ClientFactory = Callable[[Mapping[str, Credentials]], RegistryClient]


class PullFailed(Exception):
    """The image could not be had; the message is one line for the task's error."""


class ImagePuller:
    def __init__(self, store: ImageStore, client_factory: ClientFactory):
        self.store = store
        self.client_factory = client_factory
        self._inflight: dict[tuple[str, str], asyncio.Task[Image]] = {}

    async def local(self, reference: str) -> Image | None:
        """The image if the store has it (its index is read in a thread, off the event loop)."""
        try:
            return await asyncio.to_thread(self.store.resolve, reference)
        except ValueError as exc:
            raise PullFailed(str(exc)) from None

    async def ensure(self, reference: str, registry_auth: str = "",
                     on_pull: Callable[[], None] | None = None) -> Image:
        """The image of `reference`, pulled first if the store lacks it; `on_pull` is called when
        a pull is needed (the task says so in its status). PullFailed with the reason."""
        image = await self.local(reference)
        if image is not None:
            return image
        if on_pull is not None:
            on_pull()
        # Keyed by credentials too: two services with the same image but different logins
        # must not borrow each other's (the blobs are still fetched once: pull() shares them).
        key = (reference, registry_auth)
        job = self._inflight.get(key)
        if job is None:
            job = asyncio.create_task(self._pull(reference, registry_auth), name=f"pull {reference}")
            self._inflight[key] = job
            job.add_done_callback(lambda j, k=key: self._finished(k, j))
        return await asyncio.shield(job)

    def _finished(self, key: tuple[str, str], job: asyncio.Task[Image]) -> None:
        self._inflight.pop(key, None)
        if not job.cancelled():
            job.exception()  # seen: a pull whose waiters all went away must not log as unhandled

    def close(self) -> None:
        """Daemon exit: stop the pulls in flight (their partial downloads are resumed later)."""
        for job in list(self._inflight.values()):
            job.cancel()

    async def _pull(self, reference: str, registry_auth: str) -> Image:
        try:
            override = auth_override(registry_auth, reference)
        except ValueError as exc:
            raise PullFailed(f"PullOptions.RegistryAuth: {exc}") from None
        log.info("pulling %s", reference)
        try:
            async with self.client_factory(override) as client:
                image = await pull(self.store, reference, client)
        except RegistryNotFound as exc:
            raise PullFailed(f"No such image: {reference} ({exc})") from None
        except (RegistryError, ValueError) as exc:
            raise PullFailed(str(exc)) from None
        except OSError as exc:
            raise PullFailed(f"pulling {reference}: {exc}") from None
        log.info("pulled %s (%s)", reference, image.id)
        return image
