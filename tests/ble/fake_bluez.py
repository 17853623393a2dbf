"""A private D-Bus daemon and a small stand-in for bluetoothd on it.

Lets the tests run bleak's *real* BlueZ backend (D-Bus client, BlueZ manager, scanner) with
only the daemon behind ``org.bluez`` replaced: it exports ``/org/bluez/hci0`` with
``org.bluez.Adapter1`` (SetDiscoveryFilter / StartDiscovery / StopDiscovery) and one
``org.bluez.Device1`` object per advertiser, announced the way BlueZ does it
(ObjectManager ``InterfacesAdded`` for a new device, ``PropertiesChanged`` for a new
advertisement). Removing the adapter unexports it (``InterfacesRemoved``), as when a USB dongle
is pulled. The AdvertisementMonitor API (passive scanning) is absent, like BlueZ without
``--experimental``, unless ``passive_supported=True``: then ``RegisterMonitor`` is accepted,
the client's ``Patterns`` are read back over D-Bus, and only advertisements matching an
or-pattern are delivered while no active discovery runs.
"""

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
)
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

_ManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
_StrList = Annotated[list[str], DBusSignature("as")]

ADAPTER_PATH = "/org/bluez/hci0"
SERVICE_UUID = "0000fce0-0000-1000-8000-00805f9b34fb"

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def dbus_daemon_available() -> bool:
    return shutil.which("dbus-daemon") is not None


class PrivateBus:
    """``dbus-daemon`` on a socket in ``directory``; ``address`` is a D-Bus address string."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "system_bus_socket"
        self.config = directory / "bus.conf"
        self.config.write_text(_BUS_CONFIG.format(socket=self.socket))
        self.address = f"unix:path={self.socket}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._proc = subprocess.Popen(
            ["dbus-daemon", "--nofork", f"--config-file={self.config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"dbus-daemon did not start: {err}")
            time.sleep(0.02)

    def _accepting(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


class _Adapter(ServiceInterface):
    def __init__(self, owner: "FakeBlueZ") -> None:
        super().__init__("org.bluez.Adapter1")
        self._owner = owner

    @dbus_method()
    def SetDiscoveryFilter(self, filters: DBusDict) -> None:
        self._owner.discovery_filters.append(dict(filters))

    @dbus_method()
    def StartDiscovery(self) -> None:
        self._owner.discovering += 1

    @dbus_method()
    def StopDiscovery(self) -> None:
        self._owner.discovering = max(0, self._owner.discovering - 1)

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return "00:1A:7D:DA:71:13"

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> _StrList:
        return ["central", "peripheral"]


class _MonitorManager(ServiceInterface):
    def __init__(self, owner: "FakeBlueZ") -> None:
        super().__init__("org.bluez.AdvertisementMonitorManager1")
        self._owner = owner

    @dbus_method()
    def RegisterMonitor(self, application: DBusObjectPath) -> None:
        self._owner.monitor_paths.append(application)

    @dbus_method()
    def UnregisterMonitor(self, application: DBusObjectPath) -> None:
        self._owner.monitor_paths.remove(application)
        self._owner.patterns.pop(application, None)


class _GattService(ServiceInterface):
    def __init__(self, device_path: str, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self.device_path, self.uuid = device_path, uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:
        return self.device_path

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return True


class _GattCharacteristic(ServiceInterface):
    def __init__(self, service_path: str, uuid: str, values: list[bytes]) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.service_path, self.uuid, self.values = service_path, uuid, values

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> _StrList:
        return ["read"]

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


class _Device(ServiceInterface):
    def __init__(self, address: str, name: str | None, rssi: int, mfr: dict[int, bytes]) -> None:
        super().__init__("org.bluez.Device1")
        self.owner: FakeBlueZ | None = None
        self.path = ""
        self.connected = False
        self.resolved = False
        self.gatt_objects: list[str] = []
        # not "name": ServiceInterface.name is the D-Bus interface name
        self.bd_address = address
        self.local_name = name
        self.rssi = rssi
        self.mfr = mfr

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.bd_address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "random"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return self.local_name or self.bd_address.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return ADAPTER_PATH

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.rssi

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> _ManufacturerData:
        return {k: Variant("ay", v) for k, v in self.mfr.items()}

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> _StrList:
        return []

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return self.connected

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return self.resolved

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return True

    @dbus_method()
    def Connect(self) -> None:
        assert self.owner is not None and self.owner.bus is not None
        self.owner.connects += 1
        table = self.owner.gatt.get(self.bd_address, {})
        self.connected = True
        self.emit_properties_changed({"Connected": True})
        service_path = f"{self.path}/service000c"
        self.owner.bus.export(service_path, _GattService(self.path, SERVICE_UUID))
        self.gatt_objects = [service_path]
        for i, (uuid, values) in enumerate(table.items()):
            char_path = f"{service_path}/char{0x0d + 2 * i:04x}"
            self.owner.bus.export(char_path, _GattCharacteristic(service_path, uuid, values))
            self.gatt_objects.insert(0, char_path)
        self.resolved = True
        self.emit_properties_changed({"ServicesResolved": True})

    @dbus_method()
    def Disconnect(self) -> None:
        assert self.owner is not None and self.owner.bus is not None
        for path in self.gatt_objects:
            self.owner.bus.unexport(path)
        self.gatt_objects = []
        self.connected = self.resolved = False
        self.emit_properties_changed({"ServicesResolved": False, "Connected": False})


class FakeBlueZ:
    """Owns ``org.bluez`` on the bus at ``address``; see the module docstring."""

    def __init__(self, address: str, *, passive_supported: bool = False) -> None:
        self.address = address
        self.passive_supported = passive_supported
        self.bus: MessageBus | None = None
        self.discovering = 0
        self.client: str | None = None  # unique name of the last caller (the scanner)
        self.monitor_paths: list[str] = []
        self.gatt: dict[str, dict[str, list[bytes]]] = {}  # address -> uuid -> read values
        self.connects = 0
        self.patterns: dict[str, list[tuple[int, int, bytes]]] = {}
        self.discovery_filters: list[dict[str, Any]] = []
        self._adapter: _Adapter | None = None
        self._devices: dict[str, _Device] = {}

    async def start(self) -> None:
        self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.add_message_handler(self._note_caller)
        await self.bus.request_name("org.bluez")
        self.add_adapter()

    def _note_caller(self, message: Message) -> None:
        if message.message_type == MessageType.METHOD_CALL and message.sender:
            self.client = message.sender

    async def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None

    def add_adapter(self) -> None:
        assert self.bus is not None
        self._adapter = _Adapter(self)
        self.bus.export(ADAPTER_PATH, self._adapter)
        if self.passive_supported:
            self.bus.export(ADAPTER_PATH, _MonitorManager(self))

    def remove_adapter(self) -> None:
        """Like pulling the dongle: the adapter and its devices disappear from D-Bus."""
        assert self.bus is not None
        for path in list(self._devices):
            self.bus.unexport(path)
        self._devices.clear()
        self.bus.unexport(ADAPTER_PATH)
        self._adapter = None
        self.discovering = 0
        self.monitor_paths.clear()
        self.patterns.clear()

    async def wait_monitoring(self, timeout: float = 10.0) -> None:
        """Wait for a registered monitor and read its or-patterns back from the client."""
        assert self.bus is not None
        async with asyncio.timeout(timeout):
            while not self.patterns:
                for path in list(self.monitor_paths):
                    reply = await self.bus.call(
                        Message(
                            destination=self.client,
                            path=path,
                            interface="org.freedesktop.DBus.Properties",
                            member="Get",
                            signature="ss",
                            body=["org.bluez.AdvertisementMonitor1", "Patterns"],
                        )
                    )
                    if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
                        self.patterns[path] = [tuple(p) for p in reply.body[0].value]
                await asyncio.sleep(0.01)

    def _matches(self, mfr: dict[int, bytes]) -> bool:
        """BlueZ or-pattern matching on manufacturer-specific data (AD type 0xFF)."""
        for patterns in self.patterns.values():
            for start, ad_type, content in patterns:
                for company, data in mfr.items():
                    ad = company.to_bytes(2, "little") + data
                    if ad_type == 0xFF and ad[start : start + len(content)] == content:
                        return True
        return False

    def advertise(self, address: str, name: str | None, rssi: int, mfr: dict[int, bytes]) -> bool:
        """Deliver one advertisement if the adapter is scanning and would report it."""
        if self.bus is None or self._adapter is None:
            return False
        if not self.discovering and not (self.patterns and self._matches(mfr)):
            return False
        path = f"{ADAPTER_PATH}/dev_{address.replace(':', '_')}"
        device = self._devices.get(path)
        if device is None:
            device = _Device(address, name, rssi, mfr)
            device.owner, device.path = self, path
            self._devices[path] = device
            self.bus.export(path, device)  # InterfacesAdded
        else:
            device.rssi, device.mfr = rssi, mfr
            device.emit_properties_changed(
                {"RSSI": rssi, "ManufacturerData": {k: Variant("ay", v) for k, v in mfr.items()}}
            )
        return True

    async def wait_discovering(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.discovering:
                await asyncio.sleep(0.01)
