"""The CPI methods other than ``info``, each a translation to Bakery's API.

A VM is a bake (its cid is the bake id, never reused), a stemcell is a bakeform, a disk
is a Bakery disk, a snapshot a Bakery snapshot. Bakery does the work and guarantees the
hard parts (atomic Pi allocation across processes, settings and disk lists written into
the root); this module maps arguments in and Bakery's answers and errors out to what the
director expects (bosh-cpi.md §2 and §1.4).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from . import agent_settings
from .cids import (
    checked_disk_cid,
    checked_vm_cid,
    is_object_id,
    require_stemcell_cid,
    stemcell_name,
)
from .client import ApiError, BakeryClient
from .config import CpiConfig, ephemeral_disk_mib
from .errors import (
    CloudError,
    CpiError,
    DiskNotAttached,
    DiskNotFound,
    MethodNotImplemented,
    NotSupported,
    VMCreationFailed,
    VMNotFound,
)
from .log import CallLog

#: Bakery error codes after which another create_vm attempt may well succeed.
RETRYABLE_CODES = {"no_pi_available", "power_failed", "unavailable"}
#: Bake states in which the VM exists (Bakery's live states).
LIVE_STATES = {"preparing", "baked", "unbaking"}
#: Keys of create_vm's cloud_properties passed to Bakery's bake request: placement,
#: cloud-init user-data and the boot protocol, each only when the vm_type gives it.
BAKE_KEYS = ("labels", "model", "serial", "user_data", "boot_protocol")


def call(
    method: str, arguments: list[Any], config: CpiConfig, api_version: int, log: CallLog
) -> Any:
    """Run one checked CPI method; Bakery's remaining errors become CloudError."""
    cloud = Cloud(BakeryClient(config), config, api_version, log)
    try:
        return getattr(cloud, method)(*arguments)
    except ApiError as exc:
        raise CloudError(str(exc)) from None


#: Bakery's error code for each thing the director may find missing.
MISSING_CODES = {VMNotFound: "bake_not_found", DiskNotFound: "disk_not_found"}


@contextmanager
def missing_is(error: VMNotFound | DiskNotFound, *, named_alone: bool = True) -> Iterator[None]:
    """Answer Bakery's "no such bake" (or disk) with the director's own not-found error;
    the code, not the status, says which one is missing when a request names both. A
    request that names only this resource (``named_alone``) also takes the plain
    ``not_found`` of a Bakery older than its CPI for it."""
    codes = {MISSING_CODES[type(error)], *(["not_found"] if named_alone else [])}
    try:
        yield
    except ApiError as exc:
        if exc.code in codes:
            raise error from None
        raise


class Cloud:
    """One CPI call's view of Bakery: the client, the configuration, the API version."""

    def __init__(
        self, client: BakeryClient, config: CpiConfig, api_version: int, log: CallLog
    ) -> None:
        self.client = client
        self.config = config
        self.api_version = api_version
        self.log = log

    # -- stemcells -------------------------------------------------------------------

    def create_stemcell(
        self, image_path: str, cloud_properties: dict[str, Any], env: Any = None
    ) -> str:
        """Import the stemcell's image (raw, .xz or .gz: Bakery detects) as a bakeform.

        The image is streamed: the director deletes its extracted directory afterwards."""
        name = stemcell_name(cloud_properties or {})
        try:
            image = open(image_path, "rb")
        except OSError as exc:
            raise CloudError(f"cannot read stemcell image {image_path}: {exc.strerror}") from None
        with image:
            size = os.fstat(image.fileno()).st_size
            self.log.info(f"importing {image_path} ({size} bytes) as bakeform {name}")
            self.client.upload(f"/bakeforms/{name}", image, size, replace="true")
        return name

    def delete_stemcell(self, stemcell_cid: str) -> None:
        """Delete the bakeform; one already gone counts as deleted."""
        require_stemcell_cid(stemcell_cid)
        try:
            self.client.delete(f"/bakeforms/{stemcell_cid}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.log.info(f"stemcell {stemcell_cid} was already deleted")

    # -- VMs -------------------------------------------------------------------------

    def create_vm(
        self,
        agent_id: str,
        stemcell_cid: str,
        cloud_properties: dict[str, Any],
        networks: dict[str, Any],
        disk_cids: Any = None,
        env: dict[str, Any] | None = None,
    ) -> Any:
        """Bake the stemcell on a free Pi with its agent settings in place and power it on.

        Returns without waiting for the Pi to boot: the director waits for the agent.
        Whatever was made is removed again if any step fails. ``disk_cids`` (the disks
        the VM will be given) is a placement hint: with several Bakery hosts, a disk is
        attached to bakes of the host that holds it, so the bake is made there if it can."""
        undo: list[Callable[[], None]] = []
        try:
            vm_cid, networks = self._bake_vm(
                undo,
                agent_id,
                stemcell_cid,
                cloud_properties or {},
                networks,
                env or {},
                disk_cids if isinstance(disk_cids, list) else [],
            )
        except BaseException as exc:
            self._undo(undo)
            if isinstance(exc, ApiError | CpiError):
                raise _creation_failed(exc) from None
            raise
        return [vm_cid, networks] if self.api_version >= 2 else vm_cid

    def _bake_vm(
        self,
        undo: list[Callable[[], None]],
        agent_id: str,
        stemcell_cid: str,
        cloud_properties: dict[str, Any],
        networks: dict[str, Any],
        env: dict[str, Any],
        disk_cids: list[Any],
    ) -> tuple[str, dict[str, Any]]:
        """The create_vm steps; each pushes onto ``undo`` what removes what it made."""
        require_stemcell_cid(stemcell_cid)
        _require_networks(networks)
        mbus = self.config.agent_mbus()
        size = ephemeral_disk_mib(
            cloud_properties.get("ephemeral_disk_mib", self.config.ephemeral_disk_mib),
            "cloud_properties.ephemeral_disk_mib",
        )
        request = {k: cloud_properties[k] for k in BAKE_KEYS if cloud_properties.get(k)}
        bake = self.client.post(
            "/bakes",
            {
                **request,
                "bakeform": stemcell_cid,
                "near_disks": [cid for cid in disk_cids if is_object_id(cid)],
                "power_on": False,
                "metadata": {"agent_id": agent_id},
            },
        )
        vm_cid = bake["id"]
        # Unbaking also deletes the ephemeral disk, made next on the bake's own host.
        undo.append(lambda: self._delete_quietly(f"/bakes/{vm_cid}"))
        disk = None
        if size:
            disk = self.client.post(
                "/disks", {"size_mib": size, "ephemeral": True, "bake_id": vm_cid}
            )
        self.log.info(f"VM {vm_cid} is a bake on Pi {bake['serial']} (ip {bake['ip']})")
        networks = agent_settings.pi_networks(networks, bake.get("mac"))
        self._warn_about_addresses(networks, bake.get("ip"))
        settings = agent_settings.build(
            agent_id=agent_id,
            vm_cid=vm_cid,
            networks=networks,
            env=env,
            ephemeral_disk=disk,
            mbus=mbus,
            ntp=self.config.ntp,
            blobstore=self.config.blobstore,
        )
        self.client.put(f"/bakes/{vm_cid}/agent-settings", settings)
        self.client.post(f"/bakes/{vm_cid}/power", {"action": "on"})
        return vm_cid, networks

    def _warn_about_addresses(self, networks: dict[str, Any], pi_ip: str | None) -> None:
        """A manual network's IP must be the one the Pi gets by DHCP: say so if not."""
        for name, network in networks.items():
            wanted = network.get("ip")
            if network.get("type") == "manual" and wanted and pi_ip and wanted != pi_ip:
                self.log.warn(
                    f"network {name} expects IP {wanted} but the Pi is at {pi_ip}; "
                    "reserve the Pi's address for it in the DHCP server"
                )

    def _undo(self, undo: list[Callable[[], None]]) -> None:
        for step in reversed(undo):
            step()

    def _delete_quietly(self, path: str) -> None:
        """Roll back one thing; a failure is logged, never hides the original error."""
        try:
            self.client.delete(path)
            self.log.info(f"rolled back: deleted {path}")
        except ApiError as exc:
            if exc.status != 404:
                self.log.warn(f"rollback of {path} failed: {exc}")
        except CpiError as exc:
            self.log.warn(f"rollback of {path} failed: {exc.message}")

    def delete_vm(self, vm_cid: str) -> None:
        """Unbake: Bakery detaches (keeps) persistent disks and deletes the ephemeral one."""
        with missing_is(VMNotFound(f"VM '{vm_cid}' not found")):
            self.client.delete(f"/bakes/{checked_vm_cid(vm_cid)}")

    def has_vm(self, vm_cid: str) -> bool:
        bake = self._find(f"/bakes/{vm_cid}") if is_object_id(vm_cid) else None
        return bool(bake) and cast("dict[str, Any]", bake).get("state") in LIVE_STATES

    def reboot_vm(self, vm_cid: str, options: Any = None) -> None:
        """Power-cycle the Pi (a hard reboot: there is nothing softer to ask of a relay)."""
        with missing_is(VMNotFound(f"VM '{vm_cid}' not found")):
            self.client.post(f"/bakes/{checked_vm_cid(vm_cid)}/power", {"action": "cycle"})

    def set_vm_metadata(self, vm_cid: str, metadata: dict[str, Any]) -> None:
        with missing_is(VMNotFound(f"VM '{vm_cid}' not found")):
            self.client.put(f"/bakes/{checked_vm_cid(vm_cid)}/metadata", metadata or {})

    def calculate_vm_cloud_properties(self, resources: dict[str, Any]) -> dict[str, Any]:
        """A Pi's CPU and RAM are what they are; only the ephemeral disk size is chosen."""
        size = resources.get("ephemeral_disk_size", self.config.ephemeral_disk_mib)
        return {"ephemeral_disk_mib": ephemeral_disk_mib(size, "ephemeral_disk_size")}

    # -- disks -----------------------------------------------------------------------

    def create_disk(self, size: int, cloud_properties: Any, vm_cid: str | None = None) -> str:
        """A detached disk, made on the host of ``vm_cid`` (BOSH's placement hint): a disk
        is attached to bakes of the host that holds it. It comes partitioned as the agent
        partitions a persistent disk, which it then formats itself."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise CpiError(f"create_disk: size must be a whole number of MiB >= 1, got {size!r}")
        request: dict[str, Any] = {"size_mib": size, "partitioned": True}
        if vm_cid and is_object_id(vm_cid):
            request["near"] = vm_cid
        return cast(str, self.client.post("/disks", request)["id"])

    def delete_disk(self, disk_cid: str) -> None:
        with missing_is(DiskNotFound(f"Disk '{disk_cid}' not found")):
            self.client.delete(f"/disks/{checked_disk_cid(disk_cid)}")

    def has_disk(self, disk_cid: str) -> bool:
        return is_object_id(disk_cid) and self._find(f"/disks/{disk_cid}") is not None

    def attach_disk(self, vm_cid: str, disk_cid: str) -> str | None:
        """Attach (Bakery names the disk in the VM's settings); v2 answers the device hint,
        the device Bakery says the disk is on its Pi."""
        disk_missing = DiskNotFound(f"Disk '{disk_cid}' not found")
        vm_missing = VMNotFound(f"VM '{vm_cid}' not found")
        with missing_is(disk_missing, named_alone=False), missing_is(vm_missing, named_alone=False):
            attached = self.client.post(
                f"/disks/{checked_disk_cid(disk_cid)}/attach", {"bake_id": checked_vm_cid(vm_cid)}
            )
        return cast(str, attached["device"]) if self.api_version >= 2 else None

    def detach_disk(self, vm_cid: str, disk_cid: str) -> None:
        """Detach (Bakery drops it from the VM's settings); a disk gone already is fine."""
        disk = self._find(f"/disks/{disk_cid}") if is_object_id(disk_cid) else None
        if disk is None:
            self.log.info(f"disk {disk_cid} does not exist; nothing to detach")
            return
        if disk.get("bake_id") != vm_cid:
            raise DiskNotAttached(f"Disk '{disk_cid}' is not attached to VM '{vm_cid}'")
        self.client.post(f"/disks/{disk_cid}/detach")

    def get_disks(self, vm_cid: str) -> list[str]:
        """The VM's persistent disks (the ephemeral disk is not the director's)."""
        if not self.has_vm(vm_cid):
            raise VMNotFound(f"VM '{vm_cid}' not found")
        return [d["id"] for d in self._persistent_disks(vm_cid)]

    def set_disk_metadata(self, disk_cid: str, metadata: dict[str, Any]) -> None:
        with missing_is(DiskNotFound(f"Disk '{disk_cid}' not found")):
            self.client.put(f"/disks/{checked_disk_cid(disk_cid)}/metadata", metadata or {})

    def resize_disk(self, disk_cid: str, new_size: int) -> None:
        """Grow in place; a shrink is NotSupported, so the director copies to a new disk."""
        try:
            with missing_is(DiskNotFound(f"Disk '{disk_cid}' not found")):
                self.client.post(
                    f"/disks/{checked_disk_cid(disk_cid)}/resize", {"size_mib": new_size}
                )
        except ApiError as exc:
            if exc.code == "shrink_not_supported":
                raise NotSupported(f"disk {disk_cid} cannot shrink to {new_size} MiB") from None
            raise

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any] | None = None) -> str:
        """A copy-on-write snapshot; NotImplemented where Bakery's data dir has no reflinks."""
        try:
            with missing_is(DiskNotFound(f"Disk '{disk_cid}' not found")):
                path = f"/disks/{checked_disk_cid(disk_cid)}/snapshots"
                return cast(str, self.client.post(path, metadata or {})["id"])
        except ApiError as exc:
            if exc.status == 501:
                raise MethodNotImplemented(f"snapshot_disk: {exc.message}") from None
            raise

    def delete_snapshot(self, snapshot_cid: str) -> None:
        """Delete a snapshot; one already gone counts as deleted."""
        path = f"/snapshots/{snapshot_cid}"
        if not (is_object_id(snapshot_cid) and self._delete_if_exists(path)):
            self.log.info(f"snapshot {snapshot_cid} does not exist; nothing to delete")

    # -- helpers ---------------------------------------------------------------------

    def _persistent_disks(self, vm_cid: str) -> list[dict[str, Any]]:
        return [d for d in self.client.get("/disks", bake_id=vm_cid) if not d.get("ephemeral")]

    def _find(self, path: str) -> dict[str, Any] | None:
        try:
            return cast("dict[str, Any]", self.client.get(path))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _delete_if_exists(self, path: str) -> bool:
        try:
            self.client.delete(path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _require_networks(networks: Any) -> None:
    valid = isinstance(networks, dict) and all(isinstance(n, dict) for n in networks.values())
    if not valid:
        raise CpiError(f"networks must be an object of network objects, got {networks!r}")


def _creation_failed(exc: ApiError | CpiError) -> VMCreationFailed:
    """create_vm's one error type; retryable when another attempt may find a Pi."""
    if isinstance(exc, ApiError):
        retry = exc.code in RETRYABLE_CODES
        return VMCreationFailed(f"create_vm failed: {exc}", ok_to_retry=retry)
    return VMCreationFailed(f"create_vm failed: {exc.message}", ok_to_retry=False)
